"""Fixtures for the local job runtime: a file-backed store, both sandbox modes, and hosted endpoints behind
the runtime API with a boto3 client for it."""

from __future__ import annotations

import pytest

from mlops.local.runtime import sandbox
from mlops.local.s3store import S3Store

HAS_BWRAP = sandbox.bwrap_works()
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason="bwrap cannot create namespaces on this machine")


@pytest.fixture
def store(tmp_path):
    return S3Store(tmp_path / "s3")


@pytest.fixture(params=[sandbox.BWRAP, sandbox.NONE])
def mode(request, monkeypatch):
    """Runs the test once in each sandbox mode (``MLOPS_SANDBOX``)."""
    if request.param == sandbox.BWRAP and not HAS_BWRAP:
        pytest.skip("bwrap cannot create namespaces on this machine")
    monkeypatch.setenv("MLOPS_SANDBOX", request.param)
    return request.param


@pytest.fixture
def bwrap_mode(monkeypatch):
    if not HAS_BWRAP:
        pytest.skip("bwrap cannot create namespaces on this machine")
    monkeypatch.setenv("MLOPS_SANDBOX", sandbox.BWRAP)
    return sandbox.BWRAP


@pytest.fixture
def hosting(tmp_path):
    """``(LocalHosting, its store, the runtime API's URL)``; every endpoint is deleted afterwards."""
    from mlops.local.hosting.endpoints import LocalHosting
    from mlops.serving.runtime_api import RuntimeApiServer

    store = S3Store(tmp_path / "s3")
    hosting = LocalHosting(tmp_path, store)
    with RuntimeApiServer(tmp_path, hosting=hosting) as api:
        yield hosting, store, api.url
    hosting.close(delete=True)


def runtime(url: str):
    """The real boto3 sagemaker-runtime client of the API at ``url``, one attempt per call."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="eu-west-1", aws_access_key_id="local",
        aws_secret_access_key="local", config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
