"""mlops: compile, validate, run and ship SageMaker Pipelines definitions; runs them locally without Docker."""
