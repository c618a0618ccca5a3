"""One folder per pipeline step: ``step.py`` builds the SDK step, ``code/`` is what runs in the container."""
