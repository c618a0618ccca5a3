"""The project's pipelines: model-build and model-deploy (wiring only; each step lives in steps/<name>/)."""
