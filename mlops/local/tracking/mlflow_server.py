"""A local MLflow tracking server over ``<home>/mlflow/``: ``mlflow server`` with its SQLite backend store
(``mlflow.db``) and proxied artifacts (``artifacts/``), bound to 127.0.0.1 on a free port.

It is started on demand and left running, detached, for the user to browse; ``server.json`` records its pid,
port and URI so the next run reuses it while it answers ``/health``, and ``stop_server`` ends it. Its output
goes to ``server.log``, which a failed start names.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from mlops.errors import MlopsError
from mlops.local.state.home import atomic_write, now, pid_alive

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
STATE_FILE = "server.json"
LOG_FILE = "server.log"


class MlflowServerError(MlopsError):
    """The local MLflow server did not come up (or could not be stopped)."""


@dataclass(frozen=True)
class ServerInfo:
    pid: int
    port: int
    uri: str
    backend_store_uri: str
    artifacts_destination: str
    started_at: str


def mlflow_dir(home_root: Path) -> Path:
    return Path(home_root) / "mlflow"


def read_info(home_root: Path) -> ServerInfo | None:
    """What ``server.json`` records, or None (no file, or not one this module wrote)."""
    try:
        data = json.loads((mlflow_dir(home_root) / STATE_FILE).read_text())
        return ServerInfo(**data)
    except (OSError, ValueError, TypeError):
        return None


def healthy(uri: str, timeout_s: float = 2.0) -> bool:
    """The server at ``uri`` answers ``GET /health`` with OK."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
            return response.status == 200 and response.read().strip() == b"OK"
    except (OSError, urllib.error.URLError, ValueError):
        return False


def running(home_root: Path) -> ServerInfo | None:
    """The recorded server when its process lives and it answers; None otherwise."""
    info = read_info(home_root)
    if info is not None and pid_alive(info.pid) and healthy(info.uri):
        return info
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_server(
    home_root: Path,
    *,
    timeout_s: float = START_TIMEOUT_S,
    on_progress: Callable[[str], None] | None = None,
) -> ServerInfo:
    """The home's running MLflow server, started (detached, in its own session) when none answers.

    Waits at most ``timeout_s`` for ``/health``; MlflowServerError names ``server.log`` when it does not
    come up, after stopping what was started.
    """
    info = running(home_root)
    if info is not None:
        return info
    root = mlflow_dir(home_root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".start.lock", "a") as lock:  # two runs ending at once start one server
        fcntl.flock(lock, fcntl.LOCK_EX)
        return running(home_root) or _start(root, timeout_s, on_progress)


def _start(root: Path, timeout_s: float, on_progress: Callable[[str], None] | None) -> ServerInfo:
    artifacts = root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    backend = f"sqlite:///{root / 'mlflow.db'}"
    log_path = root / LOG_FILE
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend,
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    # no job runner (its huey consumers serve GenAI evaluation, and keep several cores busy), no telemetry
    env = {
        **os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
    }  # fmt: skip
    if on_progress:
        on_progress(f"starting the MLflow server on {uri} (log: {log_path}) …")
    with open(log_path, "ab") as out:
        out.write(f"--- {now()} {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=root, start_new_session=True, close_fds=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not healthy(uri, timeout_s=1.0):
        if proc.poll() is not None:
            raise MlflowServerError(
                f"the MLflow server exited ({proc.returncode}) before answering on {uri}; see {log_path}"
            )
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            raise MlflowServerError(
                f"the MLflow server did not answer on {uri} within {timeout_s:g} s; see {log_path}"
            )
        time.sleep(0.25)
    info = ServerInfo(
        pid=proc.pid, port=port, uri=uri, backend_store_uri=backend,
        artifacts_destination=str(artifacts), started_at=now(),
    )  # fmt: skip
    atomic_write(root / STATE_FILE, json.dumps(asdict(info), indent=2) + "\n")
    log.info("MLflow server %s (pid %d) over %s", uri, proc.pid, root)
    return info


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    """SIGTERM to the server's process group (its gunicorn/uvicorn workers too), SIGKILL after ``grace_s``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError as err:
            raise MlflowServerError(f"cannot stop the MLflow server (pid {pid}): {err.strerror}") from None
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                waited, _ = os.waitpid(pid, os.WNOHANG)  # our own child (started in this process)
                if waited:
                    return
            except ChildProcessError:
                if not pid_alive(pid):
                    return
            time.sleep(0.1)


def stop_server(home_root: Path) -> ServerInfo | None:
    """Stop the home's recorded server; returns what was recorded (None: nothing was)."""
    info = read_info(home_root)
    if info is None:
        return None
    if pid_alive(info.pid) and _owns(info):
        _terminate(info.pid)
    (mlflow_dir(home_root) / STATE_FILE).unlink(missing_ok=True)
    return info


def _owns(info: ServerInfo) -> bool:
    """The recorded pid is still an ``mlflow server`` (a reused pid is left alone)."""
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the record
    return b"mlflow" in cmdline and str(info.port).encode() in cmdline
