"""Local endpoints: start, stop, list, logs and blue/green deployment of model-server processes.

An endpoint named N lives in ``<home>/endpoints/N/``:

- ``state.json``: the record (public port, front pid, active version, deployment history), written atomically;
- ``upstream.json`` / ``front.json``: which version the front forwards to, and the front's acknowledgement;
- ``front.log``, ``<variant>.log``: process output; ``front.pid``, ``<variant>.pid``.

Every endpoint is a front (a small reverse proxy on the public port, see ``front.py``) plus one model-server
process per live version. A model server runs sandboxed like a serving container (its own network, pids and
root, the model at ``/opt/ml/model``, port 8080 inside, none of the caller's environment: see
``_spawn_sandboxed``) and the front reaches it through a Unix socket; with ``MLOPS_SANDBOX=none`` it listens
on an internal port of this machine instead. All processes are detached (own session) so they outlive the
CLI that started them; liveness is checked by pid *and* process start time, so a recycled pid is not mistaken
for our server.

A model server that dies while its endpoint is InService is replaced, as SageMaker replaces an unhealthy
instance: the front's watchdog calls ``restart_dead_version``, which (under the endpoint's lock, so it never
races a stop or a deployment) kills what is left of the old process group, starts the same version on a fresh
internal port, waits for it to load and switches the front to it; the history records a ``Restarted`` entry.
The front answers 502 only in between. ``MLOPS_FRONT_RESTART=0`` (or ``front --no-restart``) turns it off.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlops import isolation
from mlops.errors import MlopsError
from mlops.project import TOOLKIT_ROOT
from mlops.serving import CANNOT_SERVE, READY_DIR_ENV, http_connection

MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"  # mlops.serving.server's switch (not imported: it needs starlette)
TARGET_MODEL_HEADER = "X-Amzn-SageMaker-Target-Model"

log = logging.getLogger(__name__)

IN_SERVICE, STOPPED, FAILED = "InService", "Stopped", "Failed"
SUCCEEDED, ROLLED_BACK, RESTARTED = "Succeeded", "RolledBack", "Restarted"
VARIANTS = ("blue", "green")
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 15.0
ASYNC_PAYLOAD_MB = 1024  # InvokeEndpointAsync's payload limit (1 GB)
PAYLOAD_ENV = "SAGEMAKER_MAX_PAYLOAD_IN_MB"  # the model server's request limit (mlops.serving.server)
DRAIN_S = 0.3  # after the front switched: let requests already sent to the old version finish
UNIX_SCHEME = "http+unix://"  # a version's own URL when the host reaches it through a Unix socket
SERVING_PORT = 8080  # the serving contract's port, inside a sandboxed server's network
# Container paths of a sandboxed model server (the serving contract's, plus the toolkit and a shared dir).
MODEL_PATH, TOOLKIT_PATH, RUN_PATH = "/opt/ml/model", "/opt/mlops", "/opt/mlops/run"


class EndpointError(MlopsError):
    """A local endpoint operation failed; the message names the endpoint and the reason."""


class EndpointNotFound(EndpointError):
    exit_code = 2


# ---- records -------------------------------------------------------------------------------------------


@dataclass
class ProcessRef:
    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: tells our process apart from a later one with the same pid

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks


@dataclass
class VersionInfo:
    variant: str
    version: str
    model_dir: str
    port: int
    process: ProcessRef
    workers: int
    started_at: str
    log: str
    # Where the host reaches a sandboxed server (its own network: port 8080 is only inside it); None: the
    # server listens on 127.0.0.1:``port`` of this machine (``MLOPS_SANDBOX=none``).
    socket: str | None = None
    # ``Mode: MultiModel``: ``model_dir`` is the ModelDataUrl prefix's dir, each request's TargetModel a key in it
    multi_model: bool = False

    @property
    def url(self) -> str:
        if self.socket:
            return UNIX_SCHEME + urllib.parse.quote(self.socket, safe="")
        return f"http://127.0.0.1:{self.port}"

    @property
    def where(self) -> str:
        return f"unix:{self.socket}" if self.socket else f"port {self.port}"

    def alive(self) -> bool:
        return self.process.alive()


@dataclass
class Deployment:
    at: str
    version: str
    variant: str
    status: str
    reason: str = ""


@dataclass
class EndpointInfo:
    name: str
    port: int
    status: str
    started_at: str
    front: ProcessRef | None
    active: VersionInfo | None
    deployments: list[Deployment] = field(default_factory=list)
    generation: int = 0
    # AsyncInferenceConfig (its OutputConfig and ClientConfig) when the endpoint takes InvokeEndpointAsync
    async_config: dict | None = None
    # DataCaptureConfig when the endpoint captures what the sagemaker-runtime API passes it
    data_capture: dict | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["url"] = self.url
        return doc


@dataclass
class DeploymentResult:
    status: str  # Succeeded | RolledBack
    reason: str
    endpoint: EndpointInfo
    version: str


@dataclass
class InvocationResult:
    status: int
    content_type: str
    body: bytes
    latency_ms: float


# ---- paths and state -----------------------------------------------------------------------------------


def mlops_home(home: str | os.PathLike | None) -> Path:
    if home is None:
        raise EndpointError("no local home given for the endpoints")
    return Path(home)


def _check_name(name: str) -> None:
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 63:
        raise EndpointError(f"endpoint name {name!r}: use 1-63 letters, digits, '-' or '_'")


def _endpoint_dir(name: str, home) -> Path:
    _check_name(name)
    return mlops_home(home) / "endpoints" / name


def _write_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True))
    os.replace(tmp, path)


def _load(name: str, home) -> EndpointInfo:
    path = _endpoint_dir(name, home) / "state.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise EndpointNotFound(f"endpoint {name!r}: not found under {path.parent.parent}") from None
    except ValueError as err:
        raise EndpointError(f"{path}: unreadable state ({err})") from err
    try:
        return _from_json(doc)
    except (KeyError, TypeError, AttributeError) as err:
        raise EndpointError(f"{path}: not an endpoint record ({type(err).__name__}: {err})") from err


def _from_json(doc: dict) -> EndpointInfo:
    active = doc.get("active")
    if active:
        active = VersionInfo(**{**active, "process": ProcessRef(**active["process"])})
    front = ProcessRef(**doc["front"]) if doc.get("front") else None
    return EndpointInfo(
        name=doc["name"],
        port=doc["port"],
        status=doc["status"],
        started_at=doc["started_at"],
        front=front,
        active=active,
        deployments=[Deployment(**d) for d in doc.get("deployments", [])],
        generation=doc.get("generation", 0),
        async_config=doc.get("async_config"),
        data_capture=doc.get("data_capture"),
    )


def _save(info: EndpointInfo, home) -> None:
    doc = asdict(info)
    _write_json(_endpoint_dir(info.name, home) / "state.json", doc)


@contextlib.contextmanager
def _locked(name: str, home, *, create: bool = False) -> Iterator[Path]:
    """One supervisor operation per endpoint at a time (two CLIs deploying at once would race the ports)."""
    directory = _endpoint_dir(name, home)
    if not create and not (directory / "state.json").is_file():
        raise EndpointNotFound(f"endpoint {name!r}: not found under {directory.parent}")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield directory


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---- processes -----------------------------------------------------------------------------------------


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # exited, not yet reaped
        _reap(pid)
        return None
    return int(fields[19])


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _group_alive(ref: ProcessRef) -> bool:
    """Any live process left in the group ``ref`` leads. Zombies do not count: a sandbox's inner bwrap,
    orphaned when its parent is killed, waits for an init that may never reap it."""
    ref.alive()  # reaps the leader if it is our exited child
    try:
        os.killpg(ref.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == ref.pid and fields[0] != "Z":
                return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


# What a model server takes from this machine's environment, as an image would have it: nothing else (no
# tokens, no database URLs, no AWS credentials); the serving variables come from the supervisor itself.
_SERVER_AMBIENT_ENV = re.compile(r"^(PATH|LANG|LANGUAGE|LC_\w+|TZ|CUDA_VISIBLE_DEVICES|NVIDIA_\w+)$")


def server_env(extra_env: dict[str, str], home: Path) -> dict[str, str]:
    """A model server's allow-listed environment: the ambient basics, ``extra_env`` (the model dir, port,
    ``SAGEMAKER_*`` / ``SM_*`` serving variables), the toolkit on ``PYTHONPATH`` and a ``HOME`` of its own."""
    env = {k: v for k, v in os.environ.items() if _SERVER_AMBIENT_ENV.match(k)}
    env.setdefault("PATH", os.defpath)
    env.update(PYTHONPATH=str(TOOLKIT_ROOT), PYTHONUNBUFFERED="1", HOME=str(home))
    env.update(extra_env)
    return env


def _spawn(
    args: list[str],
    log_path: Path,
    cwd: Path,
    extra_env: dict[str, str],
    env: dict[str, str] | None = None,
    *,
    program: str = sys.executable,
) -> ProcessRef:
    if env is None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TOOLKIT_ROOT), env.get("PYTHONPATH", "")) if p)
        env.update(extra_env)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [program, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,  # detached: survives the CLI; stop() signals the whole group
        )
    for _ in range(100):
        ticks = _start_ticks(proc.pid)
        if ticks is not None or proc.poll() is not None:
            break
        time.sleep(0.01)
    return ProcessRef(proc.pid, ticks or -1)


def _terminate(ref: ProcessRef | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM the process group (uvicorn drains in-flight requests), SIGKILL it if it lingers."""
    if ref is None or not ref.alive():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(ref.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    # The whole group: a sandboxed server's bwrap may exit before the server inside has drained its requests.
    while _group_alive(ref) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _group_alive(ref):
        log.warning("pid %d ignored SIGTERM for %.0fs; killing it", ref.pid, timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(ref.pid, signal.SIGKILL)  # also any worker the parent left behind
    while ref.alive():
        time.sleep(0.02)


def tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, errors="replace") as fh:
            return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
    except FileNotFoundError:
        return []


def _load_failure(path: Path) -> str | None:
    """The model server's own one-line reason when a worker could not load the model."""
    for line in reversed(tail(path, 200)):
        if CANNOT_SERVE in line:
            return line.split(CANNOT_SERVE, 1)[1].strip()
    return None


def _log_hint(path: Path) -> str:
    reason = _load_failure(path)
    if reason:
        return reason
    last = [line.strip() for line in tail(path, 40) if line.strip()]
    return last[-1] if last else "(log is empty)"


def _http(
    address: int | str, method: str, path: str, body: bytes | None = None, headers=None, timeout: float = 5.0
):
    """One request to ``127.0.0.1:address`` (a port) or to the Unix socket ``address`` (a path)."""
    conn = http_connection(address, timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type", ""), resp.read()
    finally:
        conn.close()


def _wait_ready(
    address: int | str,
    ref: ProcessRef,
    log_path: Path,
    what: str,
    timeout: float,
    ready: tuple[Path, int] | None = None,
) -> None:
    """Until /ping answers 200 and, with ``ready=(dir, n)``, n worker processes have loaded the model."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not ref.alive():
            raise EndpointError(f"{what} exited during startup: {_log_hint(log_path)} (log: {log_path})")
        reason = _load_failure(log_path)
        if reason:  # with several workers uvicorn would keep restarting the failing one: stop now
            _terminate(ref)
            raise EndpointError(f"{what} cannot load the model: {reason} (log: {log_path})")
        if ready is None or len(list(ready[0].iterdir())) >= ready[1]:
            with contextlib.suppress(OSError, http.client.HTTPException):
                if _http(address, "GET", "/ping", timeout=2.0)[0] == 200:
                    return
        time.sleep(0.1)
    hint = _log_hint(log_path)
    _terminate(ref)
    raise EndpointError(f"{what} did not answer /ping within {timeout:.0f}s: {hint} (log: {log_path})")


def _check_request(name: str, model_dir: Path, workers: int, multi_model: bool = False) -> None:
    """Bad arguments fail before anything is recorded or started."""
    _check_name(name)
    script = model_dir / "code" / "inference.py"
    if multi_model:
        if not model_dir.is_dir():
            raise EndpointError(f"endpoint {name!r}: multi-model prefix {model_dir} is not a directory")
    elif not script.is_file():
        raise EndpointError(f"endpoint {name!r}: {script} is missing (model dir needs code/inference.py)")
    if workers < 1:
        raise EndpointError(f"endpoint {name!r}: workers must be >= 1 (got {workers})")


def payload_mb(async_config: dict | None) -> int | None:
    """The request size a model server takes: an async endpoint's payloads go up to 1 GB (real-time: 6 MB)."""
    return ASYNC_PAYLOAD_MB if async_config else None


def _start_version(
    directory: Path,
    name: str,
    model_dir: Path,
    variant: str,
    version: str,
    workers: int,
    timeout: float,
    payload: int | None = None,
    multi_model: bool = False,
) -> VersionInfo:
    new = _spawn_version(directory, name, model_dir, variant, version, workers, payload, multi_model)
    _wait_version(directory, name, new, timeout)
    return new


def _wait_version(directory: Path, name: str, new: VersionInfo, timeout: float) -> None:
    what = f"endpoint {name!r} {new.variant} model server"
    ready = (directory / f"{new.variant}.ready", new.workers)
    _wait_ready(new.socket or new.port, new.process, Path(new.log), what, timeout, ready=ready)


def _spawn_version(
    directory: Path,
    name: str,
    model_dir: Path,
    variant: str,
    version: str,
    workers: int,
    payload: int | None = None,
    multi_model: bool = False,
) -> VersionInfo:
    log_path = directory / f"{variant}.log"
    mme = {MULTI_MODEL_ENV: "true"} if multi_model else {}
    log_path.write_text("")  # a fresh log per version start; the previous version of this colour is gone
    ready_dir = directory / f"{variant}.ready"
    shutil.rmtree(ready_dir, ignore_errors=True)
    ready_dir.mkdir()
    if isolation.sandbox_mode() == isolation.BWRAP:
        ref, port, sock = _spawn_sandboxed(
            directory, model_dir, variant, workers, log_path, ready_dir, payload, mme
        )
    else:
        port, sock = free_port(), None
        serving = {
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "SM_MODEL_DIR": str(model_dir),
            READY_DIR_ENV: str(ready_dir),
            **({PAYLOAD_ENV: str(payload)} if payload else {}),
            **mme,
        }
        home = directory / f"{variant}.home"
        home.mkdir(exist_ok=True)
        args = ["-m", "mlops.serving.server", "--model-dir", str(model_dir), "--port", str(port)]
        ref = _spawn(
            [*args, "--workers", str(workers)], log_path, directory, serving, server_env(serving, home)
        )
    log.info("started %s %s (%s) as pid %d", name, variant, version, ref.pid)
    (directory / f"{variant}.pid").write_text(f"{ref.pid}\n")
    return VersionInfo(
        variant, version, str(model_dir), port, ref, workers, _now(), str(log_path), sock, multi_model
    )


def _spawn_sandboxed(
    directory: Path,
    model_dir: Path,
    variant: str,
    workers: int,
    log_path: Path,
    ready_dir: Path,
    payload: int | None = None,
    extra: dict[str, str] | None = None,
) -> tuple[ProcessRef, int, str]:
    """A model server as a serving container runs: in namespaces of its own (network, pids, hostname), a root
    built from what it needs, the model read-only at ``/opt/ml/model``, port 8080 in its own network and an
    allow-listed environment. The host reaches it through a Unix socket in ``<variant>.run/``, the one
    dir it shares with this machine (with its ready markers)."""
    run_dir = directory / f"{variant}.run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    socket_path = run_dir / "server.sock"
    mounts = [
        isolation.Mount(MODEL_PATH, model_dir, read_only=True),
        isolation.Mount(f"{TOOLKIT_PATH}/mlops", TOOLKIT_ROOT / "mlops", read_only=True),
        isolation.Mount(RUN_PATH, run_dir),
        isolation.Mount(f"{RUN_PATH}/ready", ready_dir),
    ]
    serving = {
        "SAGEMAKER_BIND_TO_PORT": str(SERVING_PORT),
        "SM_MODEL_DIR": MODEL_PATH,
        READY_DIR_ENV: f"{RUN_PATH}/ready",
        **({PAYLOAD_ENV: str(payload)} if payload else {}),
        **(extra or {}),
    }
    env = server_env(serving, Path(isolation.HOME_DIR))
    env["PYTHONPATH"] = TOOLKIT_PATH
    argv = [
        "--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "model",
        *isolation.mount_plan(mounts), "--chdir", "/", "--",
        sys.executable, "-m", "mlops.serving.server", "--model-dir", MODEL_PATH,
        "--port", str(SERVING_PORT), "--uds", f"{RUN_PATH}/server.sock", "--workers", str(workers),
    ]  # fmt: skip
    ref = _spawn(argv, log_path, directory, {}, env, program=isolation.bwrap_path())
    return ref, SERVING_PORT, str(socket_path)


def _switch(directory: Path, info: EndpointInfo, target: VersionInfo, timeout: float = 10.0) -> None:
    """Point the front at ``target`` and wait until the front confirms it forwards there."""
    info.generation += 1
    _write_json(
        directory / "upstream.json",
        {
            "generation": info.generation,
            "port": target.port,
            "socket": os.path.relpath(target.socket, directory) if target.socket else None,
            "variant": target.variant,
        },
    )
    if info.front is None:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if json.loads((directory / "front.json").read_text())["generation"] == info.generation:
                return
        if not info.front.alive():
            raise EndpointError(
                f"endpoint {info.name!r}: front process died ({_log_hint(directory / 'front.log')})"
            )
        time.sleep(0.02)
    raise EndpointError(
        f"endpoint {info.name!r}: front did not switch to {target.where} within {timeout:.0f}s"
    )


def _start_front(directory: Path, info: EndpointInfo, timeout: float) -> ProcessRef:
    log_path = directory / "front.log"
    log_path.write_text("")
    ref = _spawn(
        ["-m", "mlops.serving.front", "--state-dir", str(directory), "--port", str(info.port)],
        log_path,
        directory,
        {},
    )
    (directory / "front.pid").write_text(f"{ref.pid}\n")
    _wait_ready(info.port, ref, log_path, f"endpoint {info.name!r} front on port {info.port}", timeout)
    return ref


# ---- public API ----------------------------------------------------------------------------------------


def _live_status(info: EndpointInfo) -> EndpointInfo:
    if info.status == IN_SERVICE:
        front_ok = info.front is not None and info.front.alive()
        active_ok = info.active is not None and info.active.alive()
        if not (front_ok and active_ok):
            info.status = FAILED
    return info


def get_endpoint(name: str, *, home=None) -> EndpointInfo:
    return _live_status(_load(name, home))


def list_endpoints(*, home=None) -> list[EndpointInfo]:
    root = mlops_home(home) / "endpoints"
    if not root.is_dir():
        return []
    out = []
    for state in sorted(root.glob("*/state.json")):
        with contextlib.suppress(EndpointError):
            out.append(get_endpoint(state.parent.name, home=home))
    return out


def start_endpoint(
    name: str,
    model_dir: str | os.PathLike,
    port: int,
    *,
    home=None,
    workers: int = 2,
    variant: str = "blue",
    version: str | None = None,
    timeout: float = START_TIMEOUT_S,
    async_config: dict | None = None,
    data_capture: dict | None = None,
) -> EndpointInfo:
    """Start endpoint ``name`` serving ``model_dir`` on 127.0.0.1:``port``; returns once /ping answers 200.

    ``async_config``: an ``AsyncInferenceConfig`` (``OutputConfig.S3OutputPath`` at least): the endpoint also
    takes InvokeEndpointAsync (:mod:`mlops.serving.runtime_api`), with payloads up to 1 GB."""
    model_dir = Path(model_dir).resolve()
    if variant not in VARIANTS:
        raise EndpointError(f"endpoint {name!r}: variant {variant!r} is not one of {', '.join(VARIANTS)}")
    _check_request(name, model_dir, workers)
    with _locked(name, home, create=True) as directory:
        with contextlib.suppress(EndpointNotFound):
            current = _live_status(_load(name, home))
            if current.status == IN_SERVICE:
                raise EndpointError(
                    f"endpoint {name!r} is already in service on port {current.port}; "
                    "stop it first or deploy a new version with blue/green"
                )
            _stop_processes(current)  # a Failed endpoint may have one half still running
        if _port_in_use(port):
            raise EndpointError(f"endpoint {name!r}: port {port} on 127.0.0.1 is already in use")
        active = _start_version(
            directory,
            name,
            model_dir,
            variant,
            version or model_dir.name,
            workers,
            timeout,
            payload_mb(async_config),
        )
        info = EndpointInfo(
            name, port, "Creating", _now(), None, active, async_config=async_config, data_capture=data_capture
        )
        try:
            _switch(directory, info, active)
            info.front = _start_front(directory, info, timeout)
        except BaseException:
            _terminate(active.process)
            raise
        info.status = IN_SERVICE
        info.deployments.append(Deployment(_now(), active.version, variant, SUCCEEDED, "initial start"))
        _save(info, home)
        return info


def _stop_processes(info: EndpointInfo) -> None:
    _terminate(info.front)
    if info.active is not None:
        _terminate(info.active.process)


def stop_endpoint(name: str, *, home=None) -> EndpointInfo:
    """Stop the front and the active version; the record stays (status Stopped) for logs and history."""
    with _locked(name, home):
        info = _load(name, home)
        _stop_processes(info)
        info.status = STOPPED
        _save(info, home)
        return info


def _needs_restart(info: EndpointInfo, front_pid: int | None) -> bool:
    return (
        info.status == IN_SERVICE
        and info.active is not None
        and not info.active.alive()
        and (front_pid is None or (info.front is not None and info.front.pid == front_pid))
    )


def restart_dead_version(
    name: str, *, home=None, front_pid: int | None = None, timeout: float = START_TIMEOUT_S
) -> VersionInfo | None:
    """Replace the active model server of an InService endpoint when its process is gone.

    ``front_pid``: act only for the endpoint whose front is this process (the watchdog's own). Returns the
    new version, or None when nothing needed replacing; raises EndpointError when the replacement fails to
    start (the history records it; the endpoint shows Failed until a later try succeeds).
    """
    if not _needs_restart(_load(name, home), front_pid):  # the cheap check, without the lock
        return None
    with _locked(name, home) as directory:
        info = _load(name, home)  # again under the lock: a stop or a deployment may have just happened
        if not _needs_restart(info, front_pid):
            return None
        dead = info.active
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(dead.process.pid, signal.SIGKILL)  # workers the dead parent left behind
        log_path = Path(dead.log)
        with contextlib.suppress(OSError):
            os.replace(log_path, log_path.with_name(f"{log_path.name}.prev"))  # keep the crash for reading
        log.warning("endpoint %s: model server pid %d (%s) is gone; starting a new one", name, dead.process.pid,
                    dead.version)  # fmt: skip
        new = _spawn_version(
            directory,
            name,
            Path(dead.model_dir),
            dead.variant,
            dead.version,
            dead.workers,
            payload_mb(info.async_config),
            dead.multi_model,
        )
        info.active = new  # recorded at once: a stop while it loads must find this process
        _save(info, home)
        try:
            _wait_version(directory, name, new, timeout)
            _switch(directory, info, new)
        except EndpointError as err:
            _terminate(new.process)
            info.deployments.append(
                Deployment(_now(), dead.version, dead.variant, FAILED, f"restart failed: {err}")
            )
            _save(info, home)
            raise
        info.deployments.append(
            Deployment(
                _now(), dead.version, dead.variant, RESTARTED,
                f"model server pid {dead.process.pid} exited; replaced by pid {new.process.pid} ({new.where})",
            )
        )  # fmt: skip
        _save(info, home)
        return new


def endpoint_logs(name: str, *, home=None, lines: int = 50, source: str | None = None) -> list[str]:
    """Last ``lines`` lines of the active version's log, or of ``source`` ("front", "blue", "green")."""
    info = _load(name, home)
    directory = _endpoint_dir(name, home)
    if source is None:
        source = info.active.variant if info.active else "front"
    if source != "front" and source not in VARIANTS:
        raise EndpointError(f"endpoint {name!r}: unknown log source {source!r}; use front, blue or green")
    return tail(directory / f"{source}.log", lines)


def post(
    url: str,
    data: bytes,
    content_type: str = "application/json",
    *,
    accept: str | None = None,
    timeout: float = 60.0,
    target_model: str | None = None,
) -> InvocationResult:
    """POST ``data`` to ``<url>/invocations`` (e.g. the candidate URL a smoke test is given); never raises on HTTP errors.
    ``target_model``: the TargetModel of a multi-model version."""
    address: int | str
    if url.startswith(UNIX_SCHEME):
        address = urllib.parse.unquote(url.removeprefix(UNIX_SCHEME).rstrip("/"))
    else:
        host, _, port = url.removeprefix("http://").rstrip("/").rpartition(":")
        if host != "127.0.0.1" or not port.isdigit():
            raise EndpointError(f"{url}: local endpoints are http://127.0.0.1:PORT")
        address = int(port)
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    if target_model:
        headers[TARGET_MODEL_HEADER] = target_model
    started = time.perf_counter()
    try:
        status, ctype, body = _http(address, "POST", "/invocations", data, headers, timeout)
    except (OSError, http.client.HTTPException) as err:
        raise EndpointError(f"{url}: {type(err).__name__}: {err}") from err
    return InvocationResult(status, ctype, body, (time.perf_counter() - started) * 1000)


def invoke(
    name: str,
    data: bytes,
    content_type: str = "application/json",
    *,
    accept: str | None = None,
    home=None,
    timeout: float = 60.0,
) -> InvocationResult:
    """POST ``data`` to the endpoint's /invocations (through its front, like a client would)."""
    info = get_endpoint(name, home=home)
    if info.status != IN_SERVICE:
        raise EndpointError(f"endpoint {name!r} is {info.status}, not InService")
    try:
        return post(info.url, data, content_type, accept=accept, timeout=timeout)
    except EndpointError as err:
        raise EndpointError(f"endpoint {name!r}: {err}") from err


def deploy_blue_green(
    name: str,
    new_model_dir: str | os.PathLike,
    smoke_test: Callable[[str], None],
    *,
    port: int | None = None,
    home=None,
    workers: int = 2,
    version: str | None = None,
    timeout: float = START_TIMEOUT_S,
    async_config: dict | None = None,
    data_capture: dict | None = None,
    multi_model: bool = False,
) -> DeploymentResult:
    """Start ``new_model_dir`` beside the serving version, smoke-test it, then switch the front to it.

    ``async_config``: the endpoint config's ``AsyncInferenceConfig`` (None: real-time only), kept from now on.

    ``smoke_test(url)`` gets the new version's own URL and raises (any exception) to reject it. On failure
    (start or smoke test) the new version is stopped, the old one keeps serving, and the result is
    ``RolledBack`` with the reason. On success the old version is drained and stopped. With no endpoint yet,
    ``port`` is the public port and a success starts the front. ``multi_model``: ``new_model_dir`` is a
    multi-model prefix (the model server loads what each request's TargetModel names).
    """
    new_model_dir = Path(new_model_dir).resolve()
    version = version or new_model_dir.name
    _check_request(name, new_model_dir, workers, multi_model)
    if port is None and not (_endpoint_dir(name, home) / "state.json").is_file():
        raise EndpointError(f"endpoint {name!r} does not exist yet: give the public port")
    with _locked(name, home, create=True) as directory:
        try:
            info = _live_status(_load(name, home))
        except EndpointNotFound:
            info = EndpointInfo(name, port, "Creating", _now(), None, None)
        if info.status != IN_SERVICE:
            _stop_processes(info)
            info.active, info.front = None, None
            if _port_in_use(info.port):
                raise EndpointError(f"endpoint {name!r}: port {info.port} on 127.0.0.1 is already in use")
        old = info.active
        variant = VARIANTS[1] if old is not None and old.variant == VARIANTS[0] else VARIANTS[0]

        def rolled_back(reason: str) -> DeploymentResult:
            log.warning("endpoint %s: version %s rolled back: %s", name, version, reason)
            info.deployments.append(Deployment(_now(), version, variant, ROLLED_BACK, reason))
            if old is None:
                info.status = FAILED
            _save(info, home)
            return DeploymentResult(ROLLED_BACK, reason, info, version)

        try:
            new = _start_version(
                directory,
                name,
                new_model_dir,
                variant,
                version,
                workers,
                timeout,
                payload_mb(async_config),
                multi_model,
            )
        except EndpointError as err:
            return rolled_back(f"new version did not start: {err}")
        try:
            smoke_test(new.url)
        except Exception as err:
            _terminate(new.process)
            return rolled_back(f"smoke test failed: {type(err).__name__}: {err}")
        try:
            _switch(directory, info, new)
            if info.front is None or not info.front.alive():
                info.front = _start_front(directory, info, timeout)
        except EndpointError as err:
            _terminate(new.process)
            if old is not None:
                with contextlib.suppress(EndpointError):
                    _switch(directory, info, old)
            return rolled_back(f"switch failed: {err}")
        info.active, info.status = new, IN_SERVICE
        # an UpdateEndpoint takes its new config's settings, once the new version serves
        info.async_config, info.data_capture = async_config, data_capture
        info.deployments.append(
            Deployment(
                _now(),
                version,
                variant,
                SUCCEEDED,
                f"replaced {old.version}" if old else "initial deployment",
            )
        )
        _save(info, home)
        if old is not None:
            time.sleep(DRAIN_S)
            _terminate(old.process)
        return DeploymentResult(SUCCEEDED, "", info, version)
