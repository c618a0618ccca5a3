"""The root a sandboxed process sees: built from what it needs, never the host's.

Shared by the job runtime (:mod:`mlops.local.runtime.sandbox`) and the model server's supervisor
(:mod:`mlops.serving.supervisor`): both run code they did not write (job scripts, approved model packages)
and both give it the same kind of root: the system dirs and a minimal /etc read-only, the interpreter and
its environment read-only, a fresh /proc, a minimal /dev, a private /tmp, a writable ``$HOME`` and the
caller's mounts on top. Never $HOME, the project, the MLOPS home, /run (host sockets) or other executions.
"""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlops.errors import MlopsError

BWRAP = "bwrap"
NONE = "none"
MODES = (BWRAP, NONE)
# Host-root entries that get a fresh instance of their own instead of the host's.
_SPECIAL_ROOT = {"/proc": ["--proc", "/proc"], "/dev": ["--dev", "/dev"], "/tmp": ["--tmpfs", "/tmp"]}


class SandboxError(MlopsError):
    """A sandbox that cannot be set up as asked."""


@dataclass
class Mount:
    """Host dir or file ``source`` visible at the absolute container path ``target``."""

    target: str
    source: Path
    read_only: bool = False


def sandbox_mode() -> str:
    """``bwrap`` or ``none``: ``MLOPS_SANDBOX`` if set, else ``bwrap`` where this machine supports it.

    Never silently unisolated: without namespaces the run is refused unless ``MLOPS_SANDBOX=none`` says
    to run jobs without isolation (and then the first job says so, :func:`_start_direct`).
    """
    forced = os.environ.get("MLOPS_SANDBOX", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise SandboxError(f"MLOPS_SANDBOX={forced!r} is not one of {', '.join(MODES)}")
        if forced == BWRAP and not bwrap_works():
            raise SandboxError("MLOPS_SANDBOX=bwrap but bwrap cannot create namespaces on this machine")
        return forced
    if not bwrap_works():
        raise SandboxError(
            "jobs cannot be isolated here: bwrap is missing or cannot create Linux namespaces; "
            "install bubblewrap (and allow unprivileged user namespaces), or set MLOPS_SANDBOX=none "
            "to run jobs without isolation"
        )
    return BWRAP


def bwrap_path() -> str:
    exe = shutil.which("bwrap")
    if not exe:
        raise SandboxError("bwrap is not on PATH: install bubblewrap, or set MLOPS_SANDBOX=none")
    return exe


@functools.cache
def bwrap_works() -> bool:
    exe = shutil.which("bwrap")
    if not exe:
        return False
    probe = [exe, "--unshare-net", "--die-with-parent", "--dev-bind", "/", "/", "--"]
    probe += [exe, "--unshare-pid", "--unshare-uts", "--hostname", "algo-1", "--dev-bind", "/", "/", "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# -- mount plan -------------------------------------------------------------------------------------------
def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


# What an interpreter needs from the host, read-only: the system dirs and a minimal /etc.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys")
_ETC = (
    "passwd", "group", "nsswitch.conf", "resolv.conf", "host.conf", "gai.conf", "ssl", "pki",
    "ca-certificates", "ca-certificates.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives",
    "localtime", "timezone", "mime.types", "os-release", "protocols", "services",
)  # fmt: skip
HOME_DIR = "/root"  # the job's $HOME: a writable dir of the sandbox's own root


@functools.cache
def root_binds() -> tuple[tuple[str, str], ...]:
    """``(host source, sandbox path)`` pairs the sandbox's root is built from, all read-only.

    The system dirs and a minimal /etc, then the interpreter and its environment (``sys.prefix``,
    ``sys.base_prefix`` and the dir of the real ``sys.executable``: exactly those dirs, wherever they live,
    under $HOME, inside a checkout or under /tmp). Nothing else of the host: not $HOME, not the project,
    not the MLOPS home, not /run (host sockets), not other executions.
    """
    pairs: list[tuple[str, str]] = []
    for d in _SYSTEM_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            pairs.append((d, d))
    for name in _ETC:
        path = os.path.join("/etc", name)
        real = os.path.realpath(path)
        if os.path.lexists(path) and os.path.exists(real):
            pairs.append((real, path))
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    for p in (sys.prefix, sys.base_prefix, exe_dir, os.path.dirname(sys.executable)):
        for target in {os.path.abspath(p), os.path.realpath(p)}:
            pairs.append((os.path.realpath(p), target))
    kept: list[tuple[str, str]] = []
    for source, target in sorted(set(pairs), key=lambda st: (st[1].count("/"), st[1])):
        # a dir inside one already bound, from the same host tree, is already visible
        if not any(
            _under(target, t) and source == os.path.normpath(os.path.join(s, os.path.relpath(target, t)))
            for s, t in kept
        ):
            kept.append((source, target))
    return tuple(kept)


def _symlinked_system_dirs() -> list[str]:
    return [d for d in _SYSTEM_DIRS if os.path.islink(d)]


def mount_plan(mounts: list[Mount], root: Path | None = None) -> list[str]:
    """bwrap arguments that build the job's root from what it needs, with ``mounts`` on top.

    The root is bwrap's own tmpfs, or the host dir ``root`` (a container's writable layer: what the process
    writes outside its mounts, /tmp included, lands there), with the read-only :func:`root_binds`, a fresh
    /proc, a minimal /dev (plus the GPUs), a private /tmp and a writable ``/root`` ($HOME). A mount point inside a read-only host dir
    that does not exist there cannot be created, so the deepest existing directory on the way to it is
    "exploded": it becomes a tmpfs and each of its real children is bound back (``/usr/x`` for ``/usr/x/y``).
    """
    for m in mounts:
        if not m.target.startswith("/") or ".." in m.target.split("/"):
            raise SandboxError(f"container path {m.target!r} must be absolute and without '..'")
    tops = [m for m in mounts if not any(o is not m and _under(m.target, o.target) for o in mounts)]
    for m in mounts:
        if m not in tops:
            # A mount inside another mount: its mount point must exist in the covering source.
            cover = max((o for o in tops if _under(m.target, o.target)), key=lambda o: len(o.target))
            inner = Path(cover.source) / os.path.relpath(m.target, cover.target)
            if Path(m.source).is_dir():
                inner.mkdir(parents=True, exist_ok=True)
            elif not inner.exists():
                inner.parent.mkdir(parents=True, exist_ok=True)
                inner.touch()
    binds = root_binds()
    explode: set[str] = set()
    for m in tops:
        if _under(m.target, "/tmp") or m.target in _SPECIAL_ROOT:
            continue  # a fresh tmpfs: bwrap can make any mount point there
        link = next((d for d in _symlinked_system_dirs() if _under(m.target, d) and m.target != d), None)
        if link is not None:
            raise SandboxError(f"cannot mount {m.target}: {link} is not a directory on this machine")
        covering = [(s, t) for s, t in binds if _under(m.target, t)]
        if not covering:
            continue  # on the sandbox's own tmpfs root: bwrap makes the mount point
        source, target = max(covering, key=lambda st: len(st[1]))
        host = os.path.normpath(os.path.join(source, os.path.relpath(m.target, target)))
        if os.path.lexists(host):
            if os.path.islink(host) or os.path.isdir(host) != Path(m.source).is_dir():
                raise SandboxError(
                    f"cannot mount {m.source} at {m.target}: {m.target} is a link or of another kind"
                )
            continue
        if source != target:
            raise SandboxError(f"cannot mount {m.target}: {target} is a read-only host path here")
        parent = os.path.dirname(host)
        while not os.path.lexists(parent):
            parent = os.path.dirname(parent)
        if os.path.islink(parent) or not os.path.isdir(parent):
            raise SandboxError(f"cannot mount {m.target}: {parent} is not a directory on this machine")
        explode.add(parent)
    args: list[str] = []
    special = dict(_SPECIAL_ROOT)
    if root is not None:
        root = Path(root)
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        os.chmod(root / "tmp", 0o1777)
        args += ["--bind", str(root), "/"]
        del special["/tmp"]  # the layer's own /tmp, on disk, as a container's is
    for d in _symlinked_system_dirs():  # merged /usr: /bin -> usr/bin
        args += ["--symlink", os.readlink(d), d]
    for source, target in binds:
        if target.startswith("/etc/") or _under(target, "/tmp"):
            continue  # after /etc and /tmp exist
        args += ["--ro-bind", source, target]
    args += [a for fresh in special.values() for a in fresh]
    args += ["--dir", "/etc", "--dir", HOME_DIR]
    for source, target in binds:
        if target.startswith("/etc/") or _under(target, "/tmp"):
            # an interpreter or virtualenv under /tmp (as CI clones often are) stays visible
            args += ["--ro-bind", source, target]
    for directory in sorted(explode, key=lambda d: d.count("/")):
        args += ["--tmpfs", directory] + _bind_children(directory)
    # bwrap's fresh /dev has no accelerators; hand the GPUs through so CUDA jobs see them.
    for dev in sorted(glob.glob("/dev/nvidia*")):
        args += ["--dev-bind", dev, dev]
    for m in sorted(mounts, key=lambda m: m.target.count("/")):
        if not Path(m.source).exists():
            raise SandboxError(f"cannot mount {m.source} at {m.target}: {m.source} does not exist")
        args += ["--ro-bind" if m.read_only else "--bind", str(m.source), m.target]
    return args


def _bind_children(directory: str) -> list[str]:
    """Binds each entry of the host's ``directory`` back onto a tmpfs put over it (read-only)."""
    args: list[str] = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path) or os.path.isfile(path):
            args += ["--ro-bind", path, path]
    return args
