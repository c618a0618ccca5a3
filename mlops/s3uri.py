"""S3 URIs: the one place that splits ``s3://bucket/key`` (the AWS control plane and the local store).

``split`` is S3's own reading: any key, as SageMaker and S3 accept it (``a//b`` and ``a/./b`` are keys
distinct from ``a/b`` there). ``split_confined`` is the local store's: a key becomes a path under
``<home>/s3/<bucket>/``, so it must never name anything else. The rule, chosen over mapping such keys to
some other path (which would alias distinct keys and can go wrong): a key whose ``/``-separated segments
include an empty one (a leading ``/``, a ``//``), ``.`` or ``..``, or that holds a NUL, is refused with
one line naming the URI. One trailing ``/`` is allowed (``s3://b/prefix/``, a "directory" prefix), and so
is an empty key (the bucket itself).
"""

from __future__ import annotations

from mlops.errors import MlopsError


class S3UriError(MlopsError):
    """Not an S3 URI, or one the local store refuses."""


def split(uri: object) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; raises S3UriError on anything that is not an S3 URI."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise S3UriError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket or bucket.startswith(".") or "/" in bucket or "\0" in bucket:
        raise S3UriError(f"S3 URI {uri!r} has no valid bucket name")
    return bucket, key


def key_problem(key: str) -> str | None:
    """Why a key cannot name a confined local path (see the module doc), or None when it can."""
    if "\0" in key:
        return "a NUL character"
    if key.startswith("/"):
        return "a leading '/' (an empty path segment)"
    parts = key.split("/")
    if parts and parts[-1] == "":
        parts = parts[:-1]  # one trailing '/': a prefix
    for part in parts:
        if part == "":
            return "an empty path segment ('//')"
        if part in (".", ".."):
            return f"a {part!r} path segment"
    return None


def split_confined(uri: object) -> tuple[str, str]:
    """:func:`split`, refusing keys that could leave ``<bucket>/`` when mapped to a path."""
    bucket, key = split(uri)
    problem = key_problem(key)
    if problem:
        raise S3UriError(f"S3 URI {uri!r} has {problem}, which the local store refuses")
    return bucket, key


def join(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"
