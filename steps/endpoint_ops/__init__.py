"""CloudWatch rollback alarms and autoscaling of an endpoint (no SageMaker step type covers them)."""
