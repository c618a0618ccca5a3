"""Container code: runs inside the job with only the container contract (imports neither mlops nor pipelines)."""
