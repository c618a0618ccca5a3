"""Model, endpoint config and endpoint steps of the model-deploy pipeline."""
