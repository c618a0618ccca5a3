"""boto3 control plane: upsert/start/status/wait/diff of pipelines, infrastructure and event triggers."""
