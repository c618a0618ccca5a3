"""A hosted endpoint's serving containers as detached processes of this machine.

Each container of each instance is one sandboxed serving host (:mod:`mlops.local.runtime.serving`, the same
host a transform job's instances run) driven by a small runner process of its own (``python -m
mlops.local.hosting.containers RUN``): it runs the host until it is told to stop (SIGTERM), streaming the
container's output to its log. Being detached (own session), a container outlives a restart of the process
that routes to it; it is reached through the Unix socket in its run dir.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import pickle
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlops.errors import MlopsError
from mlops.local.runtime import serving
from mlops.local.runtime.common import HostDirs
from mlops.serving import http_connection
from mlops.serving.supervisor import ProcessRef, _spawn, _terminate, tail

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0  # SageMaker gives a container minutes to answer /ping
STOP_TIMEOUT_S = 15.0


class ContainerError(MlopsError):
    """A serving container did not start, or stopped answering."""


@dataclass
class ContainerRef:
    hostname: str  # the container's ContainerHostname (an inference pipeline's containers differ by it)
    root: str  # its host dir (/opt/ml, the writable layer, run/)
    socket: str  # where its server listens
    log: str
    process: ProcessRef

    def alive(self) -> bool:
        return self.process.alive()


def start(parent: Path, name: str, hostname: str, served: serving.ServingContainer) -> ContainerRef:
    """Start one sandboxed host of ``served`` in ``parent/name`` (a fresh dir); returns before it is ready."""
    root = parent / name
    shutil.rmtree(root, ignore_errors=True)
    h = HostDirs("algo-1", root)
    h.ml.mkdir(parents=True)
    instance, socket_path = serving.host(served, h)
    spec = root / "instance.pickle"
    spec.write_bytes(pickle.dumps(instance))
    log_path = root / "container.log"
    ref = _spawn(["-m", __name__, str(spec), str(log_path)], log_path, root, {})
    return ContainerRef(hostname, str(root), str(socket_path), str(log_path), ref)


def _hint(ref: ContainerRef) -> str:
    """The container's own last line: not the runner's ``[mlops]`` lines about its exit."""
    lines = [line.strip() for line in tail(Path(ref.log), 40) if line.strip()]
    own = [line for line in lines if not line.startswith("[mlops]")]
    return (own or lines or ["(log is empty)"])[-1]


def ping(ref: ContainerRef, timeout: float = 2.0) -> bool:
    conn = http_connection(ref.socket, timeout)
    try:
        conn.request("GET", "/ping")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def wait_ready(ref: ContainerRef, what: str, timeout: float = READY_TIMEOUT_S) -> None:
    """Until the container answers ``/ping`` with 200; a container that exits or never answers is stopped
    and named with its last log line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not ref.alive():
            raise ContainerError(f"{what} exited during startup: {_hint(ref)} (log: {ref.log})")
        if Path(ref.socket).exists() and ping(ref):
            return
        time.sleep(0.05)
    stop(ref)
    raise ContainerError(f"{what} did not answer /ping within {timeout:.0f} s: {_hint(ref)} (log: {ref.log})")


def stop(ref: ContainerRef) -> None:
    _terminate(ref.process, STOP_TIMEOUT_S)


def memory_bytes(ref: ContainerRef) -> int:
    """Resident memory of the container's processes (its runner, sandbox and server, with workers)."""
    import psutil

    try:
        root = psutil.Process(ref.process.pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def _run(spec: Path, log_path: Path) -> int:
    from mlops.local.runtime import sandbox

    instance = pickle.loads(spec.read_bytes())
    stop_event = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_event.set())
    result = sandbox.run_group(
        [instance], work_dir=spec.parent / ".sandbox", log_paths=[log_path], cancel=stop_event, grace_s=5.0
    )
    code = result.exit_codes[0]
    if not stop_event.is_set():
        log.error("serving container exited with code %s", code)
    return 0 if stop_event.is_set() else (code or 1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="[mlops] %(levelname)s: %(message)s", stream=sys.stdout)
    os.umask(0o022)
    sys.exit(_run(Path(sys.argv[1]), Path(sys.argv[2])))
