"""Stand-ins for SageMaker's built-in algorithm images, run as a job's entrypoint when no script is given."""
