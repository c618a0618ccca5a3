"""Runs a job's instances as SageMaker containers would see them, without containers.

``bwrap`` mode (the default; required unless ``MLOPS_SANDBOX=none``): one outer ``bwrap --unshare-net`` per
job gives the job a private network (loopback up) that its N hosts share, so fixed ports such as torchrun's
``algo-1:7777`` never collide between concurrent jobs. Inside it a generated bash supervisor starts
one inner ``bwrap`` per instance with its own hostname (``algo-N``), PID namespace, a generated
``/etc/hosts`` (``algo-*`` -> 127.0.0.1), a private ``/tmp`` and a root built only from what the job needs
(:func:`mount_plan`: system dirs, a minimal /etc, the interpreter; never $HOME, the project, the MLOPS home
or other executions), the instance's sandbox dirs bound at their container paths (``/opt/ml``, processing
``LocalPath`` s, ...), an allow-listed environment (:func:`job_environment`) and its ``InstanceType``'s
CPUs and memory (:func:`limits_prefix`).

``none`` mode (``MLOPS_SANDBOX=none`` only; without usable namespaces a run is refused otherwise): processes
run directly, without isolation (it says so once); every container path in the arguments, environment and
working dir is rewritten to its host dir ("mapped paths"). Scripts that read container paths from files
they ship themselves cannot be rewritten. The environment allow-list and the limits apply here too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mlops.isolation import (  # noqa: F401  (re-exported: the job runtime's one sandbox vocabulary)
    BWRAP,
    HOME_DIR,
    MODES,
    NONE,
    Mount,
    SandboxError,
    _under,
    bwrap_works,
    mount_plan,
    root_binds,
    sandbox_mode,
)
from mlops.local.records import RuntimeFault
from mlops.local.runtime import instances as instance_types

log = logging.getLogger(__name__)

SUPERVISOR = "supervise.sh"  # written into each job's sandbox work dir
_TAIL_LINES = 20
_SHELL_ENV = ("PWD", "OLDPWD", "SHLVL", "_")
_warned_mapped = False


@dataclass
class Instance:
    """One job instance (one SageMaker host): its command and what it sees."""

    host: str
    argv: list[str]
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    cwd: str | None = None
    # The keys of ``env`` the job's request sets itself (its ``Environment``): they reach the job as given.
    # Of the rest only the container contract does (:func:`job_environment`).
    declared_env: Collection[str] = ()
    # The ``InstanceType``: the job gets its CPU count and memory (:mod:`.instances`); None: the machine's.
    instance_type: str | None = None
    # The container's writable layer: a host dir of the job's own bound at ``/``, so what the job writes
    # outside its mounts (its working dir, /tmp, $HOME, new dirs) lands on disk, never in the host's root,
    # and is discarded when the group ends. None: bwrap's in-memory root.
    layer: Path | None = None
    # The instance's volume (``VolumeSizeInGB``): the host dirs that count against it and its size.
    volume: tuple[Path, ...] = ()
    volume_bytes: int | None = None
    # A network of the host's own instead of the one the job's hosts share (serving containers, which all
    # listen on 8080 and never talk to each other); the job's bridges to this machine are not in it.
    own_network: bool = False


@dataclass
class GroupResult:
    exit_codes: list[int]
    stopped: bool  # the cancel event was set
    timed_out: bool  # max_runtime elapsed
    stderr_tail: dict[str, list[str]]  # host -> last stderr lines
    mode: str
    disk_full: str | None = None  # "algo-1 wrote 1.2 GB, over its 1 GB volume": the job was stopped for it


@functools.cache
def host_paths_under_tmp() -> tuple[str, ...]:
    """The toolkit and the interpreter, where they live under /tmp (outermost paths only)."""
    from mlops.project import TOOLKIT_ROOT

    candidates = {
        os.path.realpath(p)
        for p in (TOOLKIT_ROOT, sys.prefix, sys.base_prefix, os.path.dirname(sys.executable))
    }
    under = sorted(p for p in candidates if _under(p, "/tmp") and p != "/tmp")
    return tuple(p for p in under if not any(o != p and _under(p, o) for o in under))


# -- mapped paths (no namespaces) -------------------------------------------------------------------------
def path_rewriter(mounts: list[Mount]) -> Callable[[str], str]:
    """Rewrites container paths (``/opt/ml/...``) inside a string to their host dirs, longest first."""
    pairs = sorted(((m.target.rstrip("/"), str(m.source)) for m in mounts), key=lambda p: -len(p[0]))
    if not pairs:
        return lambda s: s
    table = dict(pairs)
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(t) for t, _ in pairs) + r")(?=/|$|[^\w.-])")
    return lambda s: pattern.sub(lambda m: table[m.group(1)], s)


# -- environment and resources ---------------------------------------------------------------------------
# What a container gets besides its request's ``Environment``: set by the runtime (passed only when the
# runtime set them, never as the executor's own leftovers) ...
_RUNTIME_ENV = re.compile(
    r"^(SM_\w+|SAGEMAKER_\w+|TRAINING_JOB_\w+|PROCESSING_JOB_\w+|PYTHONPATH|AWS_ENDPOINT_URL\w*"
    r"|AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|AWS_SESSION_TOKEN|AWS_DEFAULT_REGION|AWS_REGION"
    r"|PIP_NO_INDEX|PIP_DISABLE_PIP_VERSION_CHECK)$"
)
_REGION_ENV = ("AWS_DEFAULT_REGION", "AWS_REGION")
# ... and the ambient ones an image would have.
_AMBIENT_ENV = re.compile(
    r"^(PATH|LANG|LANGUAGE|LC_\w+|TZ|PYTHONUNBUFFERED|CUDA_VISIBLE_DEVICES|NVIDIA_\w+)$"
)


def job_environment(inst: Instance, home: str) -> dict[str, str]:
    """The allow-listed environment ``inst`` starts with: the container contract plus its ``Environment``.

    Nothing else of the executor's environment (tokens, database URLs, the host's AWS credentials) reaches
    the job; ``HOME`` is ``home``, a writable dir of the sandbox's own.
    """
    declared = set(inst.declared_env)
    env = {}
    for key, value in inst.env.items():
        # A runtime name counts when the runtime set it: a value equal to the executor's own is a leftover
        # (credentials, SM_*), except the region, which the stand-ins set and which is no secret.
        runtime_set = _RUNTIME_ENV.match(key) and (key in _REGION_ENV or os.environ.get(key) != value)
        if key in declared or _AMBIENT_ENV.match(key) or runtime_set:
            env[key] = value
    if "HOME" not in declared:
        env["HOME"] = home
    return env


# Applies an instance's limits, then runs its command (where util-linux's prlimit/taskset are missing).
_LIMITER = (
    "import os, resource, sys\n"
    "mem, cpus = int(sys.argv[1]), [int(c) for c in sys.argv[2].split(',')]\n"
    "resource.setrlimit(resource.RLIMIT_DATA, (mem, mem))\n"
    "os.sched_setaffinity(0, cpus)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def limits_prefix(inst: Instance) -> list[str]:
    """The command that gives ``inst`` its instance type's memory and CPUs before running its own.

    Memory is an ``RLIMIT_DATA`` (private writable memory, per process: ``RLIMIT_AS`` would fail Python's and
    CUDA's address-space reservations), so a runaway allocation fails with an out-of-memory error in the
    job instead of taking the machine; CPUs are an affinity mask (what ``nproc`` and thread pools see).
    """
    limits = instance_types.limits_for(inst.instance_type)
    if limits is None:
        return []
    cpus = ",".join(map(str, limits.cpus))
    prlimit, taskset = shutil.which("prlimit"), shutil.which("taskset")
    if prlimit and taskset:
        return [prlimit, f"--data={limits.memory}", taskset, "-c", cpus]
    return [sys.executable, "-I", "-c", _LIMITER, str(limits.memory), cpus]


# -- process tree handling --------------------------------------------------------------------------------
def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _is_supervisor(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"/{SUPERVISOR}".encode() in f.read()
    except OSError:
        return False


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# -- running a group ----------------------------------------------------------------------------------------
def run_group(
    instances: list[Instance],
    *,
    work_dir: Path,
    log_paths: list[Path],
    on_line: Callable[[str, str, str], None] | None = None,
    cancel: threading.Event | None = None,
    max_runtime: float | None = None,
    grace_s: float = 10.0,
    mode: str | None = None,
    bridges: list[tuple[int, str]] = (),
) -> GroupResult:
    """Runs all instances at once, streaming each output line to its log and ``on_line(host, stream, line)``.

    Returns when every instance has exited. ``cancel`` or ``max_runtime`` send SIGTERM to the job's
    processes, then SIGKILL after ``grace_s``.
    """
    mode = mode or sandbox_mode()
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    pipes = [(os.pipe(), os.pipe()) for _ in instances]
    tails = {inst.host: deque(maxlen=_TAIL_LINES) for inst in instances}
    log_lock = threading.Lock()
    log_files = [open(p, "a", encoding="utf-8", buffering=1) for p in log_paths]  # noqa: SIM115
    readers = []
    for i, inst in enumerate(instances):
        for stream, (r, _w) in zip(("stdout", "stderr"), pipes[i], strict=True):
            t = threading.Thread(
                target=_pump,
                args=(r, inst.host, stream, log_files[i], log_lock, on_line, tails[inst.host]),
                daemon=True,
            )
            t.start()
            readers.append(t)
    status_path = work_dir / "supervisor-status.json"
    status_path.unlink(missing_ok=True)
    launcher = LAUNCHERS[mode]
    watchdog = None
    try:
        roots, watchdog = launcher.start(instances, pipes, work_dir, status_path, bridges)
    except BaseException:
        for t in readers:
            t.join(timeout=5)  # they see EOF once the write ends below are closed
        for f in log_files:
            with contextlib.suppress(OSError):  # a full disk fails the job, not the cleanup
                f.close()
        raise
    finally:
        for (_, w1), (_, w2) in pipes:
            os.close(w1)
            os.close(w2)
    stopped = timed_out = False
    disk_full = None
    volumes = VolumeWatch(instances)
    deadline = time.monotonic() + max_runtime if max_runtime else None
    try:
        while [p.poll() for p in roots].count(None):
            if cancel is not None and cancel.is_set():
                stopped = True
            elif deadline is not None and time.monotonic() > deadline:
                timed_out = True
            else:
                disk_full = volumes.over()
            if stopped or timed_out or disk_full:
                _terminate(roots, grace_s)
                break
            if any(p.returncode for p in roots):
                # As on SageMaker, one failed host fails the job: its peers would wait for it forever.
                _terminate(roots, grace_s)
                break
            _wait_exit(roots, 0.1)
    except BaseException:
        _terminate(roots, 0)
        raise
    finally:
        for p in roots:
            p.wait()
        if watchdog is not None:
            os.close(watchdog)  # the watchdog now kills whatever the job left behind
        for t in readers:
            t.join(timeout=5)
        for f in log_files:
            with contextlib.suppress(OSError):  # a full disk fails the job, not the cleanup
                f.close()
        if disk_full is None and not (stopped or timed_out):
            disk_full = volumes.over(final=True)  # a job that filled its volume between two counts
        for inst in instances:
            if inst.layer is not None:  # a container's layer goes with its container
                shutil.rmtree(inst.layer, ignore_errors=True)
    codes = launcher.exit_codes(roots, status_path, len(instances))
    if codes is None:
        if not (stopped or timed_out):
            # Not the job's doing: the sandbox (its "instances") went away before it reported how they ended.
            code = roots[0].returncode
            raise RuntimeFault(
                f"the job's sandbox supervisor ended ({_exit_words(code)}) before reporting its hosts' exit codes"
            )
        codes = [roots[0].returncode or -signal.SIGKILL] * len(instances)
    return GroupResult(codes, stopped, timed_out, {h: list(t) for h, t in tails.items()}, mode, disk_full)


# -- the volume --------------------------------------------------------------------------------------------
def tree_bytes(root: Path) -> int:
    """Disk blocks under ``root``, walked without following a link, each inode counted once."""
    total, seen, todo = 0, set(), [str(root)]
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue  # removed while we walked
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
        except OSError:
            continue
    return total


def _size(n: int) -> str:
    for unit, scale in (("GB", 2**30), ("MB", 2**20)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n / 1024:.1f} KB"


class VolumeWatch:
    """Counts what each instance wrote against its ``VolumeSizeInGB`` while the job runs.

    A plain host dir has no size limit, so its usage is measured by walking it, at most every second and
    never more than a twentieth of the time (a job that writes 100k files is not slowed by the count). A
    job past its volume is stopped, as the full EBS volume would stop it on SageMaker.
    """

    def __init__(self, instances: list[Instance], min_interval: float = 1.0):
        self.watched = [i for i in instances if i.volume_bytes is not None and i.volume]
        self.min_interval = min_interval
        self.next_at = time.monotonic() + min_interval

    def over(self, final: bool = False) -> str | None:
        if not self.watched or (time.monotonic() < self.next_at and not final):
            return None
        t0 = time.monotonic()
        found = None
        for inst in self.watched:
            used = sum(tree_bytes(d) for d in inst.volume)
            if used > inst.volume_bytes:
                found = f"{inst.host} wrote {_size(used)}, over its {_size(inst.volume_bytes)} volume"
                break
        spent = time.monotonic() - t0
        self.next_at = time.monotonic() + max(self.min_interval, 20 * spent)
        return found


# -- launchers ----------------------------------------------------------------------------------------------
class Launcher(Protocol):
    """Starts a job's instances and reports each one's exit code; the rest of run_group is shared."""

    def start(self, instances, pipes, work_dir: Path, status_path: Path, bridges) -> tuple[list, int | None]:
        """The root processes to wait for, and a watchdog fd to close afterwards (or None)."""
        ...

    def exit_codes(self, roots: list[subprocess.Popen], status_path: Path, count: int) -> list[int] | None:
        """Each instance's exit code, or None when the launcher cannot tell (its supervisor died)."""
        ...


def _exit_words(code: int | None) -> str:
    if code is not None and (code < 0 or 128 < code < 128 + 65):
        number = -code if code < 0 else code - 128
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class NamespaceLauncher:
    """Every instance in its own namespaces under one bwrap per job (sandbox at /opt/ml, algo-N hosts)."""

    def start(self, instances, pipes, work_dir, status_path, bridges):
        try:
            return [_start_bwrap(instances, pipes, work_dir, status_path, bridges)], None
        except OSError as err:  # bwrap itself cannot start (no memory, no processes left, ...)
            raise RuntimeFault(f"cannot start the job's sandbox (bwrap): {err.strerror or err}") from err

    def exit_codes(self, roots, status_path, count):
        try:
            return json.loads(status_path.read_text())
        except (OSError, ValueError):  # the supervisor died before it wrote them
            return None


class MappedPathsLauncher:
    """Plain processes whose container paths were rewritten to the sandbox dirs (no namespaces)."""

    def start(self, instances, pipes, work_dir, status_path, bridges):
        return _start_direct(instances, pipes, work_dir)

    def exit_codes(self, roots, status_path, count):
        return [p.returncode for p in roots]


LAUNCHERS: dict[str, Launcher] = {BWRAP: NamespaceLauncher(), NONE: MappedPathsLauncher()}


def _wait_exit(procs: list[subprocess.Popen], timeout: float) -> None:
    """Sleeps until one of ``procs`` exits or ``timeout`` passes; a pidfd wakes us the moment it exits."""
    fds = []
    try:
        for p in procs:
            if p.returncode is None:
                try:
                    fds.append(os.pidfd_open(p.pid))
                except (OSError, AttributeError):  # already reaped, or no pidfd on this kernel
                    time.sleep(min(timeout, 0.02))
                    return
        if fds:
            select.select(fds, [], [], timeout)
    finally:
        for fd in fds:
            os.close(fd)


def _pump(fd, host, stream, log_file, lock, on_line, tail) -> None:
    log_ok = True
    with open(fd, "rb") as f:
        for raw in f:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if log_ok:
                try:
                    with lock:
                        log_file.write(f"[{host}] {line}\n")
                except OSError as err:  # a full disk: keep draining the pipe so the job is never blocked
                    log_ok = False
                    tail.append(f"the job log could not be written: {err.strerror or err}")
            if stream == "stderr":
                tail.append(line)
            if on_line is not None:
                try:
                    on_line(host, stream, line)
                except Exception:  # a broken callback must not stall the job's pipes
                    log.exception("log callback failed")


def _start_bwrap(instances, pipes, work_dir: Path, status_path: Path, bridges=()) -> subprocess.Popen:
    """One outer bwrap (the job's network) running a bash supervisor that starts one inner bwrap per host.

    The supervisor is a generated bash script rather than Python: it starts in milliseconds. Each inner
    bwrap writes straight into the executor's pipes (inherited fds), so no process copies log lines.
    """
    hosts_file = work_dir / "hosts"
    names = " ".join(inst.host for inst in instances)
    hosts_file.write_text(f"127.0.0.1\tlocalhost {names}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    exe = shutil.which("bwrap")
    all_fds = [fd for (_, w1), (_, w2) in pipes for fd in (w1, w2)]
    # Only the allow-listed environment reaches a host. What the hosts share reaches them through the
    # supervisor's own environment, so the script on disk holds only the per-host variables.
    envs = [job_environment(inst, HOME_DIR) for inst in instances]
    shared = {k: v for k, v in envs[0].items() if all(e.get(k) == v for e in envs)}
    lines = [
        "# generated by mlops.local.runtime.sandbox: one sandboxed process per host, exit codes to a file"
    ]
    if bridges:
        # in the job's network namespace, before any host starts: 127.0.0.1:port -> a host Unix socket, for
        # every bridge, from one forwarder process
        from mlops.local.aws_standin import forwarders_command

        ready = work_dir / "bridges.ready"
        ready.unlink(missing_ok=True)
        cmd = forwarders_command(sys.executable, bridges, str(ready))
        lines.append(f"{shlex.join(cmd)} </dev/null >/dev/null 2>&1 &")
        lines.append("b0=$!")
        lines.append(f"for _ in $(seq 500); do [ -e {shlex.quote(str(ready))} ] && break; sleep 0.01; done")
        lines.append("trap 'kill $b0 2>/dev/null' EXIT")
    for i, (inst, ((_, w_out), (_, w_err))) in enumerate(zip(instances, pipes, strict=True)):
        mounts = [*inst.mounts, Mount("/etc/hosts", hosts_file, read_only=True)]
        argv = [
            *limits_prefix(inst),
            exe,
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-uts",
            "--unshare-ipc",
            *(["--unshare-net"] if inst.own_network else []),
        ]
        for key in _SHELL_ENV:  # what bash adds to its children's environment
            if key not in envs[i]:
                argv += ["--unsetenv", key]
        for key, value in envs[i].items():
            if shared.get(key) != value or key in _SHELL_ENV:
                argv += ["--setenv", key, value]
        argv += ["--hostname", inst.host, *mount_plan(mounts, root=inst.layer)]
        argv += ["--chdir", inst.cwd or "/", "--", *inst.argv]
        closes = " ".join(f"{fd}>&-" for fd in all_fds)
        lines.append(f"{shlex.join(argv)} </dev/null >&{w_out} 2>&{w_err} {closes} &")
        lines.append(f"p{i}=$!")
    # As on SageMaker, one failed host fails the job: stop its peers, which would wait for it forever.
    pids = " ".join(f"$p{i}" for i in range(len(instances)))
    lines.append(f"for _ in {pids}; do wait -n || {{ kill -TERM {pids} 2>/dev/null; break; }}; done")
    for i in range(len(instances)):
        lines.append(f"wait $p{i}; c{i}=$?")
    codes = ",".join(f"$c{i}" for i in range(len(instances)))
    tmp = shlex.quote(f"{status_path}.tmp")
    lines.append(f'echo "[{codes}]" > {tmp} && mv {tmp} {shlex.quote(str(status_path))}')
    script = work_dir / SUPERVISOR
    script.write_text("\n".join(lines) + "\n")
    outer = [exe, "--unshare-net", "--die-with-parent", "--dev-bind", "/", "/", "--", _bash(), str(script)]
    # A session of its own: Ctrl-C reaches only the executor, which stops the job cleanly via ``cancel``.
    # No preexec_fn (unsafe with the executor's threads): bwrap's --die-with-parent ties the job to us.
    return subprocess.Popen(
        outer, env=shared, stdin=subprocess.DEVNULL, pass_fds=all_fds, start_new_session=True
    )


@functools.cache
def _bash() -> str:
    exe = shutil.which("bash")
    if not exe:
        raise SandboxError("bwrap mode needs bash on PATH")
    return exe


def _start_direct(instances, pipes, work_dir: Path) -> list[subprocess.Popen]:
    global _warned_mapped
    if not _warned_mapped:
        _warned_mapped = True
        log.warning(
            "MLOPS_SANDBOX=none: jobs run WITHOUT isolation (they can read this machine's files and reach "
            "its network; only their environment is filtered), with mapped paths: scripts that hard-code "
            "/opt/ml paths or algo-N host names may fail"
        )
    procs = []
    for inst, ((_, w_out), (_, w_err)) in zip(instances, pipes, strict=True):
        rewrite = path_rewriter(inst.mounts)
        home = (inst.layer / HOME_DIR.lstrip("/")) if inst.layer else work_dir / "home" / inst.host
        home.mkdir(parents=True, exist_ok=True)
        env = job_environment(inst, str(home))
        cwd = rewrite(inst.cwd) if inst.cwd else None
        if cwd is not None and cwd == inst.cwd and inst.layer is not None:
            # an unmapped working dir ("/", the image's) is the job's own layer, never the host's root
            cwd = str(inst.layer / cwd.lstrip("/"))
            os.makedirs(cwd, exist_ok=True)
        procs.append(
            subprocess.Popen(
                [*limits_prefix(inst), *(rewrite(a) for a in inst.argv)],
                env={k: rewrite(v) for k, v in env.items()},
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=w_out,
                stderr=w_err,
                start_new_session=True,
            )
        )
    return procs, _start_watchdog([p.pid for p in procs])


# Without namespaces nothing kills grandchildren when the executor dies (PDEATHSIG reaches only direct
# children), so a watchdog in its own session waits for EOF on a pipe that only the executor holds and
# then kills the instances' process groups.
_WATCHDOG = (
    "import os, sys\n"
    "sys.stdin.buffer.read()\n"
    "for g in sys.argv[1:]:\n"
    "    try:\n"
    "        os.killpg(int(g), 9)\n"
    "    except OSError:\n"
    "        pass\n"
)


def _start_watchdog(pgids: list[int]) -> int:
    r, w = os.pipe()
    try:
        subprocess.Popen(
            [sys.executable, "-I", "-c", _WATCHDOG, *map(str, pgids)],
            stdin=r,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        os.close(r)
    return w


def _terminate(roots: list[subprocess.Popen], grace_s: float) -> None:
    """SIGTERM the job's own processes (not the bwrap/supervisor plumbing), SIGKILL what is left."""
    tree = [pid for p in roots for pid in descendants(p.pid)]
    # Signalling bwrap or the supervisor would tear the namespaces down before the job could clean up.
    workers = [p.pid for p in roots] + tree
    workers = [pid for pid in workers if _comm(pid) != "bwrap" and not _is_supervisor(pid)]
    _signal(workers, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end and any(p.poll() is None for p in roots):
        time.sleep(0.05)
    _signal([pid for p in roots for pid in descendants(p.pid)] + [p.pid for p in roots], signal.SIGKILL)
