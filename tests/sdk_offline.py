"""An offline SageMaker SDK v3 PipelineSession for tests: the SDK's uploads land in the local store and any
AWS call it would make fails the test."""

from __future__ import annotations

import os
from pathlib import Path


def store_session(store, bucket: str = "b"):
    """A PipelineSession whose ``upload_data`` puts files in ``store`` (``s3://<bucket>/...``) and whose
    boto session refuses every request."""
    os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    class StoreSession(PipelineSession):
        """Offline: the SDK's uploads (code, sm_drivers) land in the local store."""

        def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
            uri = f"s3://{bucket or default}/{key_prefix}/{os.path.basename(path)}"
            store.put_tree(uri, Path(path))
            return uri

        def default_bucket(self):
            return default

    def offline(request, **_):
        raise RuntimeError(f"offline test tried to call AWS: {request.url}")

    default = bucket
    boto = boto3.Session(region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    boto._session.register("before-send", offline)
    return StoreSession(boto_session=boto, default_bucket=bucket)
