"""How one local run is to be done: every setting travels in one object, from the CLI to the handlers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunOptions:
    params: Mapping[str, Any] = field(default_factory=dict)  # parameter overrides (strings or typed)
    resume: str | None = None  # execution id to resume: re-run only what did not succeed
    use_cache: bool = True  # honour CacheConfig
    max_parallel: int | None = None  # steps at once (default: the cores)
    pipeline_name: str | None = None  # recorded name (default: the definition's metadata)
    # where the definition came from (git commit, dirty state: mlops.local.source), recorded with the run
    source: Mapping[str, Any] | None = None
    file_systems: Mapping[str, str] = field(default_factory=dict)  # EFS/FSx id -> local directory
    # config local.images: image pattern -> the environment standing in for it (mlops.local.images)
    images: Mapping[str, Any] = field(default_factory=dict)
    endpoint_ports: Mapping[str, int] = field(default_factory=dict)  # endpoint name -> local port
    # config local.lambda_functions: FunctionArn or name -> "package.module:function" | "file.py:function"
    lambda_functions: Mapping[str, str] = field(default_factory=dict)
    callback_timeout_s: float | None = None  # config local.callback_timeout_s (a step's Timeout wins)
    # (endpoint name, new version URL) -> raise to keep the serving version
    endpoint_gate: Callable[[str, str], None] | None = None
    stop: threading.Event | None = None  # set to stop every step (SIGINT/SIGTERM do it in the main thread)
