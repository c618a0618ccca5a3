"""This repository's project as the toolkit sees it (tests run from the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

from mlops.project import load_project

ROOT = Path(__file__).resolve().parent.parent
PROJECT = load_project(ROOT)


def load_config(env: str, directory=None, environ=None):
    """The project's config of ``env``; ``MLOPS_CONFIG_DIR`` (set by the config_dir fixture) is honoured."""
    from mlops.config import load_config as load

    directory = directory or os.environ.get("MLOPS_CONFIG_DIR") or ROOT / "config"
    return load(env, Path(directory), schema=PROJECT.declaration.config_schema, root=ROOT, environ=environ)
