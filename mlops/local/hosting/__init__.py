"""SageMaker's hosting control plane, locally: models, endpoint configs, endpoints with variants, autoscaling.

- ``endpoints``: hosted endpoints (production variants with weights and instance counts; one container,
  an inference pipeline of several, Direct invocation, multi-model) and how a request is routed;
- ``containers``: each instance's serving containers as detached sandboxed processes;
- ``control_plane``: the ``sagemaker`` API's model, endpoint-config, endpoint and transform-job calls;
- ``autoscaling`` / ``autoscaling_api``: Application Auto Scaling's policies acting on instance counts.
"""
