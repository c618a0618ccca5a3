"""Shared fixtures: a compiled definition per environment (compiling takes seconds, so once per session)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Tests never reach AWS: no credentials, a region only where the SDK insists.
for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def compiled_local():
    from mlops.compile.compiler import compile_pipelines
    from tests.project import PROJECT, load_config

    return compile_pipelines(PROJECT, load_config("local"))


@pytest.fixture(scope="session")
def compiled_prod():
    from mlops.compile.compiler import compile_pipelines
    from tests.project import PROJECT, load_config

    return compile_pipelines(PROJECT, load_config("prod"))


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    """A writable copy of config/ that MLOPS_CONFIG_DIR points at."""
    dest = tmp_path / "config"
    shutil.copytree(ROOT / "config", dest)
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(dest))
    monkeypatch.setenv("MLOPS_PROJECT_ROOT", str(ROOT))
    monkeypatch.chdir(tmp_path)  # errors name files relative to the working directory
    return dest
