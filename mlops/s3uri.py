"""S3 URIs: the one place that splits ``s3://bucket/key`` (the AWS control plane and the local store)."""

from __future__ import annotations

from mlops.errors import MlopsError


class S3UriError(MlopsError):
    """Not an S3 URI, or one the local store refuses."""


def split(uri: object) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; raises S3UriError on anything that is not an S3 URI."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise S3UriError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or bucket.startswith(".") or "/" in bucket:
        raise S3UriError(f"S3 URI {uri!r} has no valid bucket name")
    return bucket, key


def join(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"
