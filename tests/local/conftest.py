"""Fixtures for the local job runtime: a file-backed store and both sandbox modes."""

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
