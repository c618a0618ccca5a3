"""The preprocess step."""
