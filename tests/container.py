"""Run a command as if inside a SageMaker container: a host directory mounted at /opt/ml, via bubblewrap."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mlops.local.runtime.sandbox import host_paths_under_tmp

VENV_BIN = Path(sys.executable).parent


def bwrap_or_skip() -> str:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        pytest.skip("bubblewrap (bwrap) is not installed: container-contract tests need it")
    return bwrap


def run_in_container(
    cmd: list[str],
    opt_ml: Path,
    env: dict[str, str] | None = None,
    hostname: str = "algo-1",
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``cmd`` with ``opt_ml`` at /opt/ml, its own loopback-only network and hostname; returns the result."""
    args = [bwrap_or_skip(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    # /opt/ml does not exist on the host and the root is read-only: rebuild /opt on a tmpfs.
    args += ["--tmpfs", "/opt"]
    for entry in sorted(Path("/opt").iterdir()) if Path("/opt").is_dir() else []:
        if entry.name != "ml":
            args += ["--ro-bind", str(entry), str(entry)]
    args += ["--bind", str(opt_ml), "/opt/ml"]
    with tempfile.NamedTemporaryFile("w", prefix="hosts.", suffix=".txt") as hosts:
        # torchrun's rendezvous looks the hostname up; SageMaker's DNS resolves algo-N, so must we.
        hosts.write(f"127.0.0.1 localhost {hostname}\n::1 localhost\n")
        hosts.flush()
        args += ["--ro-bind", hosts.name, "/etc/hosts", "--tmpfs", "/tmp"]
        for keep in host_paths_under_tmp():  # a checkout or virtualenv under /tmp stays visible
            args += ["--ro-bind", keep, keep]
        args += [
            "--unshare-net",
            "--unshare-uts",
            "--hostname",
            hostname,
            "--die-with-parent",
            "--chdir",
            "/tmp",
        ]
        base_env = {
            "PATH": f"{VENV_BIN}:/usr/bin:/bin",
            "HOME": "/tmp",
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
        }
        return subprocess.run(
            args + cmd,
            env={**base_env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
