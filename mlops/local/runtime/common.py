"""What Processing and Training jobs share: request checks, host dirs, environment, inputs and results."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import tarfile
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.definition.preflight import MAX_LOCAL_HOSTS
from mlops.errors import DefinitionError
from mlops.local.runtime import sandbox
from mlops.local.s3store import S3Store, S3StoreError, read_nofollow, relative_key_problem, split_uri

log = logging.getLogger(__name__)

ML = "/opt/ml"
# Variables from the executor's own environment that the job must not inherit.
_DROP_ENV = re.compile(r"^(AWS_|SM_|SAGEMAKER_|PYTEST_|MLOPS_SANDBOX$|VIRTUAL_ENV$|PYTHONHOME$)")
# The most of a file the executor reads back from a job's sandbox (a failure or message file).
SANDBOX_READ_LIMIT = 64 * 1024


class JobRequestError(DefinitionError):
    """A job request the local runtime cannot run: names the field and the value."""


@dataclass
class JobResult:
    status: str  # "Completed" | "Failed" | "Stopped"
    failure_reason: str | None
    properties: dict
    metrics: dict[str, float]
    log_paths: list[Path]
    job_dir: Path


@dataclass
class HostDirs:
    """One instance's sandbox on this machine: ``ml`` is what the job sees at ``/opt/ml``."""

    host: str
    root: Path
    ml: Path = field(init=False)
    layer: Path = field(init=False)  # the container's writable layer, bound at / (discarded after the job)

    def __post_init__(self) -> None:
        self.ml = self.root / "ml"
        self.layer = self.root / "layer"

    def container_dir(self, container_path: str) -> Path:
        """The host dir behind a container path: under ``ml`` for ``/opt/ml/...``, else under ``paths/``."""
        rel = os.path.relpath(container_path, ML)
        if not rel.startswith(".."):
            return self.ml / rel if rel != "." else self.ml
        return self.root / "paths" / container_path.lstrip("/")


def host_names(count: int) -> list[str]:
    return [f"algo-{i}" for i in range(1, count + 1)]


def check_host_count(count: int, field_name: str) -> None:
    """Refuse, before any host dir exists, more hosts than this machine runs (preflight's limit)."""
    if count > MAX_LOCAL_HOSTS:
        raise JobRequestError(
            f"{field_name} = {count}: more than the {MAX_LOCAL_HOSTS} hosts that run on this machine"
        )


def make_host_dirs(job_dir: Path, count: int) -> list[HostDirs]:
    """Fresh sandboxes: a retry in the same job dir must not see the previous attempt's files."""
    check_host_count(count, "InstanceCount")
    hosts = [HostDirs(h, Path(job_dir) / h) for h in host_names(count)]
    for h in hosts:
        shutil.rmtree(h.root, ignore_errors=True)
        (Path(job_dir) / f"{h.host}.log").unlink(missing_ok=True)
        h.ml.mkdir(parents=True)
    return hosts


def get(request: dict, dotted: str, kind: type | tuple = object, default: Any = ..., where: str = "") -> Any:
    """``request["A"]["B"]`` for ``"A.B"``, type-checked, with a one-line error naming the field."""
    node: Any = request
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if default is not ...:
                return default
            raise JobRequestError(f"{where or 'job request'}: missing field {dotted}")
        node = node[part]
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        raise JobRequestError(f"{where or 'job request'}: field {dotted} = {node!r} has the wrong type")
    return node


def volume_bytes(request: dict, dotted: str) -> int | None:
    """The instance volume's size (``VolumeSizeInGB``, GiB as EBS counts them) in bytes; None when unset."""
    size = get(request, dotted, int, None)
    if size is None:
        return None
    if size < 1:
        raise JobRequestError(f"{dotted} = {size} must be >= 1")
    return size * 2**30


def disk_full_reason(what: str, field_name: str) -> str:
    return (
        f"ClientError: no space left on the instance's volume: {what} (its input data, /opt/ml, and what "
        f"it wrote in its own filesystem count); raise {field_name} or write less"
    )


def container_path(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or ".." in value.split("/"):
        raise JobRequestError(f"{field_name} = {value!r} must be an absolute container path without '..'")
    return value.rstrip("/") or "/"


def s3_uri(value: Any, field_name: str) -> str:
    try:
        split_uri(value)
    except S3StoreError as err:
        raise JobRequestError(f"{field_name}: {err}") from err
    return value


def base_env(extra: dict[str, Any] | None, python: Path | None = None) -> dict[str, str]:
    """The executor's environment minus AWS/SageMaker leftovers, with the job's interpreter first on PATH.

    The image is not pulled: ``python3``, ``pip3`` and ``torchrun`` resolve to the environment standing in
    for it (``python``: its interpreter; default the project's venv).
    """
    env = {k: v for k, v in os.environ.items() if not _DROP_ENV.match(k)}
    bin_dir = str(Path(python).parent if python else Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, *[p for p in env.get("PATH", "").split(os.pathsep) if p]])
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in (extra or {}).items():
        if not isinstance(value, str):
            raise JobRequestError(f"Environment.{key} = {value!r} must be a string")
        env[key] = value
    for key, value in _PIP_ENV.items():
        if key not in (extra or {}):
            env[key] = value
    return env


# No package index is reachable from a job: its toolkit's ``pip install -r requirements.txt`` finds what was
# installed before the job (:func:`stand_in`) and fails at once, naming the package, on anything else.
_PIP_ENV = {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def now() -> datetime:
    return datetime.now(UTC)


def s3_objects(store: S3Store, uri: str, data_type: str, where: str) -> list[tuple[str, str]]:
    """``(object uri, relative path)`` pairs for an S3Prefix or ManifestFile input, sorted by key."""
    if data_type == "S3Prefix":
        return store.relative_keys(uri)
    if data_type == "ManifestFile":
        if not store.exists(uri):
            return []
        try:
            manifest = json.loads(store.path(uri).read_text())
            prefix = manifest[0]["prefix"]
            rels = [r for r in manifest[1:] if isinstance(r, str)]
        except (ValueError, LookupError, TypeError) as err:
            raise JobRequestError(
                f"{where}: manifest {uri} is not a SageMaker manifest file ({err})"
            ) from err
        s3_uri(prefix, f"{where}: manifest {uri} prefix")
        base = prefix if prefix.endswith("/") else prefix + "/"
        for r in rels:
            problem = relative_key_problem(r)
            if problem:
                raise JobRequestError(
                    f"{where}: manifest {uri} entry {r!r} has {problem}; entries are keys relative to its prefix"
                )
            s3_uri(base + r, f"{where}: manifest {uri} entry {r!r}")
        return [(base + r, r) for r in sorted(rels)]
    raise JobRequestError(
        f"{where}: S3DataType {data_type!r} is not supported locally (S3Prefix, ManifestFile)"
    )


def shard(objects: list, index: int, count: int, distribution: str, where: str) -> list:
    """``ShardedByS3Key``: instance ``index`` gets objects index, index+count, ... of the sorted keys."""
    if distribution in ("", "FullyReplicated"):
        return objects
    if distribution == "ShardedByS3Key":
        return objects[index::count]
    raise JobRequestError(
        f"{where}: S3DataDistributionType {distribution!r} is not one of FullyReplicated, ShardedByS3Key"
    )


# The job dir's record of every metric value, one JSON object a line, appended as the job's lines are read.
METRIC_HISTORY_FILE = "metric-history.jsonl"
# ``epoch=3``, ``epoch 3/20``, ``Epoch: 3`` on a line that a metric regex matched: that point's epoch.
_EPOCH = re.compile(r"\bepoch\s*[=: ]\s*(\d+)\b", re.IGNORECASE)


class MetricParser:
    """Applies ``MetricDefinitions`` regexes to each host's log lines, as SageMaker does to the job's log
    streams, and keeps every value it captures.

    ``values``: the last value of each name, whichever host printed it (``FinalMetricDataList``). With
    :meth:`record_to`, each value is also a line of a JSON-lines file as it is read: ``name``, ``host``,
    ``seq`` (the n-th value of that name on that host, from 0), ``value``, ``timestamp`` (when the line was
    read, as CloudWatch stamps a log event) and ``epoch``: the value of a metric named ``epoch`` on the same
    line, else the N of ``epoch=N`` / ``epoch N`` / ``epoch: N`` on it, else null.
    """

    def __init__(self, definitions: list[dict]):
        self.rules = []
        for i, d in enumerate(definitions or []):
            try:
                self.rules.append((d["Name"], re.compile(d["Regex"])))
            except (KeyError, TypeError, re.error) as err:
                raise JobRequestError(
                    f"AlgorithmSpecification.MetricDefinitions[{i}] is invalid: {err}"
                ) from err
        self.values: dict[str, float] = {}
        self.stamps: dict[str, datetime] = {}
        self.counts: dict[tuple[str, str], int] = {}  # (name, host) -> values seen
        self._history = None
        self._lock = threading.Lock()

    def record_to(self, path: Path) -> None:
        """Write every value from now on to ``path`` (a fresh file), one JSON line each, flushed; with no
        definitions there is nothing to write and no file."""
        with self._lock:
            self.close()
            if not self.rules:
                return
            self._history = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None

    def feed(self, line: str, host: str = "algo-1") -> None:
        found = []
        for name, rx in self.rules:
            m = rx.search(line)
            if not m:
                continue
            try:
                found.append((name, float(m.group(1) if m.groups() else m.group(0))))
            except (TypeError, ValueError):
                continue
        if not found:
            return
        epoch = _line_epoch(line, found)
        with self._lock:  # stamped under the lock: stamps and the last value agree on what came last
            stamp = now()
            lines = []
            for name, value in found:
                seq = self.counts.get((name, host), 0)
                self.counts[(name, host)] = seq + 1
                self.values[name] = value
                self.stamps[name] = stamp
                point = {"name": name, "host": host, "seq": seq, "value": value,
                         "timestamp": stamp.isoformat(timespec="microseconds"), "epoch": epoch}  # fmt: skip
                lines.append(json.dumps(point) + "\n")
            if self._history is not None:
                self._append("".join(lines))

    def _append(self, text: str) -> None:
        """Append to the history; a write that fails (a full disk) ends the history, never the job's log."""
        try:
            self._history.write(text)
            self._history.flush()
        except OSError as err:
            log.warning("metric history %s not written further: %s", self._history.name, err)
            try:
                self._history.close()
            except OSError:
                pass
            self._history = None

    def final_list(self) -> list[dict]:
        return [
            {"MetricName": n, "Value": v, "Timestamp": self.stamps[n].isoformat()}
            for n, v in self.values.items()
        ]


def _line_epoch(line: str, found: list[tuple[str, float]]) -> int | None:
    for name, value in found:
        if name.lower() == "epoch" and math.isfinite(value):
            return int(value)
    m = _EPOCH.search(line)
    return int(m.group(1)) if m else None


def read_metric_history(job_dir: str | Path) -> list[dict]:
    """The points a job's :class:`MetricParser` recorded in ``job_dir``; [] when it recorded none. A line
    cut short (the executor killed mid-write) or not a point is skipped.

    A step whose jobs each have a directory of their own in ``job_dir`` (a Tuning step: one training job
    per trial) has their histories, each point's host prefixed with its job's directory name
    (``<trial job>/algo-1``), so every trial is a series of its own."""
    own = Path(job_dir) / METRIC_HISTORY_FILE
    if own.is_file() or not Path(job_dir).is_dir():
        return _read_history_file(own)
    points = []
    for sub in sorted(p for p in Path(job_dir).iterdir() if p.is_dir()):
        for point in _read_history_file(sub / METRIC_HISTORY_FILE):
            points.append({**point, "host": f"{sub.name}/{point['host']}"})
    return points


def _read_history_file(path: Path) -> list[dict]:
    points = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    for raw in text.splitlines():
        try:
            p = json.loads(raw)
            point = {
                "name": str(p["name"]), "host": str(p["host"]), "seq": int(p["seq"]),
                "value": float(p["value"]), "timestamp": str(p["timestamp"]),
                "epoch": None if p.get("epoch") is None else int(p["epoch"]),
            }  # fmt: skip
        except (ValueError, TypeError, KeyError):
            continue
        points.append(point)
    return points


_STOPPED_BY_US = {-15, -9, 143, 137}  # SIGTERM/SIGKILL, as a signal or as a shell's 128 + n
# A launcher's wrapper around the real error (the SDK's torchrun driver, torch elastic), not the error.
# The training toolkit's ExecuteUserScriptError wraps the script's error with its exit code and command.
_WRAPPER_ERROR = re.compile(r"\b(CalledProcessError|ChildFailedError|ExecuteUserScriptError)\b")
# What a rank reports when a peer died first (gloo, NCCL, c10d): an echo of the failure, not its cause.
_PEER_LOST = re.compile(
    r"Connection (closed|reset) by peer|remote worker crashing|RendezvousClosedError|"
    r"NCCL communicator was aborted|DistNetworkError|Broken pipe"
)
# ``ValueError: ...`` as Python prints it, possibly behind ``[algo-1]`` / ``[rank1]:`` prefixes.
_ERROR_LINE = re.compile(
    r"^(?:\s*\[[\w.-]+\]:?)*\s*((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Interrupt|Exit)(?::\s*\S.*)?)$"
)
_LOG_SCAN_LINES = 400


def exit_description(host: str, code: int) -> str:
    """``algo-1 exited with code 3`` or, for a signal (``-N`` from a process, ``128 + N`` from a shell),
    ``algo-1 was killed by SIGKILL (out of memory?)``."""
    number = -code if code < 0 else code - 128 if 128 < code < 128 + 65 else None
    try:
        name = signal.Signals(number).name if number else None
    except ValueError:
        name = None
    if name is None:
        return f"{host} exited with code {code}"
    hint = " (out of memory?)" if number == signal.SIGKILL else ""
    return f"{host} was killed by {name}{hint}"


_LINE_PREFIX = re.compile(r"^(?:\s*\[[\w.-]+\]:?)*\s*")


def first_error_line(lines: list[str]) -> str | None:
    """The first line that is a real error (``ValueError: ...``), not a launcher's wrapper of one. The
    training toolkit relays a script's stderr as it reads it from the pipe, so ``Error: message`` may reach
    the log split over lines (``Error``, ``:``, ``message``): the pieces are joined again."""
    for i, raw in enumerate(lines):
        m = _ERROR_LINE.match(raw.rstrip())
        if not m or _WRAPPER_ERROR.search(m.group(1)):
            continue
        text = m.group(1).strip()
        if ":" not in text:
            rest = [r for r in (_LINE_PREFIX.sub("", line).strip() for line in lines[i + 1 : i + 5]) if r]
            if len(rest) > 1 and rest[0] == ":":
                text = f"{text}: {rest[1]}"
            elif rest and rest[0].startswith(":") and len(rest[0]) > 1:
                text = f"{text}: {rest[0][1:].strip()}"
        return text
    return None


def _log_lines(host) -> list[str]:
    path = host.root.parent / f"{host.host}.log"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return list(deque(f, maxlen=_LOG_SCAN_LINES))
    except OSError:
        return []


def read_sandbox_text(host: HostDirs, rel: str) -> tuple[str, str | None]:
    """``(text, None)`` of ``/opt/ml/<rel>`` in a host's sandbox, at most SANDBOX_READ_LIMIT bytes, opened
    without following a symlink; ``("", why)`` when it is a symlink or not a regular file; ``("", None)``
    when it is not there."""
    path = host.ml / rel
    try:
        os.lstat(path)
    except OSError:
        return "", None
    try:
        data = read_nofollow(host.root, path, SANDBOX_READ_LIMIT)
    except S3StoreError:
        return "", f"{ML}/{rel} ignored: a symlink or not a regular file"
    return data.decode(errors="replace").strip(), None


def job_warning(
    log_path: Path, host: str, message: str, on_log: Callable[[str, str], None] | None, level: str = "WARNING"
) -> None:
    """A line from the executor in a host's job log (and this log), e.g. a symlink it did not follow."""
    line = f"[mlops] {level}: {message}"
    log.log(logging.getLevelName(level), "%s: %s", host, message)
    try:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "a") as f:
            f.write(line + "\n")
    except OSError:
        pass
    if on_log is not None:
        on_log(host, line)


def failure_reason(failure_file: str, hosts: list, codes: list[int], tails: dict[str, list[str]]) -> str:
    """Why the job failed, from the host that failed first: its failure file if written (``failure_file``
    relative to its ``/opt/ml``), else its first real error line, else its last stderr lines. A failure
    file that only wraps the error (the SDK torchrun driver's ``CalledProcessError``) gives way to the
    failing rank's own error line. Hosts we stopped because a peer failed come last, and so do hosts whose
    error only says that a peer went away (gloo's ``Connection closed by peer``): which rank exits first
    is a race, the cause is not."""
    failed = []
    for h, code in zip(hosts, codes, strict=True):
        if code == 0:
            continue
        text, refused = read_sandbox_text(h, failure_file)
        reason = None
        if text and not _WRAPPER_ERROR.search(text):
            reason = text[-2048:]
        else:
            line = first_error_line(tails.get(h.host, [])) or first_error_line(_log_lines(h))
            if line:
                reason = line if not text else f"{line} ({exit_description(h.host, code)})"
        if refused:
            reason = f"{reason or exit_description(h.host, code)} ({refused})"
        echo = bool(reason and _PEER_LOST.search(reason))
        failed.append((code in _STOPPED_BY_US, reason is None, echo, not text, h, code, reason))
    if not failed:
        return "job failed"
    failed.sort(key=lambda f: f[:4])
    *_, host, code, reason = failed[0]
    if reason:
        return reason
    tail = "\n".join(tails.get(host.host, [])[-10:]).strip()
    return exit_description(host.host, code) + (f": {tail}" if tail else "")


LogCallback = Callable[[str, str], None]


def service_env(services) -> dict[str, str]:
    """Variables that point a job's AWS SDK at the local stand-ins (``aws_standin.LocalAws``), if any."""
    return services.job_env(sandbox.sandbox_mode()) if services else {}


# A job failure that may come from the stand-in environment (an import, a removed or renamed API).
_ENVIRONMENT_ERROR = re.compile(
    r"\b(ModuleNotFoundError|ImportError|AttributeError|TypeError|unexpected keyword argument|"
    r"No module named|cannot import name|version)\b"
)


@dataclass
class StandIn:
    """The Python environment that stands in for a job's image, and the mounts it needs."""

    environment: Any  # mlops.local.images.environments.Environment
    mounts: list[sandbox.Mount]

    def hint(self, reason: str | None) -> str | None:
        """``reason``, with the sentence naming the stand-in when the failure may come from it."""
        if not reason or not _ENVIRONMENT_ERROR.search(reason):
            return reason
        from mlops.local.images.environments import failure_hint

        return f"{reason} ({failure_hint(self.environment)})"


@dataclass
class JobRequirements:
    """A job's own ``requirements.txt``: where it was found and what it asks for."""

    source: str  # "requirements.txt of s3://b/code/sourcedir.tar.gz"
    text: str


_REQUIREMENTS_LIMIT = 1 << 20


def requirements_at(store: S3Store, uri: str) -> JobRequirements | None:
    """The ``requirements.txt`` at the top of a code tarball (``sourcedir.tar.gz``) or an S3 prefix, where the
    toolkits look for it, or the ``.txt`` object ``uri`` itself; None when there is none."""
    try:
        if re.search(r"\.(tar\.gz|tgz|tar)$", uri):
            if not store.exists(uri):
                return None
            with tarfile.open(store.path(uri)) as tar:
                for name in ("requirements.txt", "./requirements.txt"):
                    try:
                        member = tar.getmember(name)
                    except KeyError:
                        continue
                    f = tar.extractfile(member) if member.isfile() else None
                    if f is not None:
                        text = f.read(_REQUIREMENTS_LIMIT).decode("utf-8", "replace")
                        return JobRequirements(f"requirements.txt of {uri}", text)
            return None
        candidate = uri if uri.endswith(".txt") else uri.rstrip("/") + "/requirements.txt"
        if store.exists(candidate):
            return JobRequirements(
                candidate, store.path(candidate).read_bytes()[:_REQUIREMENTS_LIMIT].decode()
            )
    except (OSError, tarfile.TarError, UnicodeDecodeError, S3StoreError):
        return None  # an unreadable tarball fails in the job itself, where the toolkit unpacks it
    return None


def stand_in(
    image: str,
    images: Mapping[str, Any] | None,
    log_paths: list[Path],
    on_log,
    requirements: JobRequirements | None = None,
) -> StandIn:
    """The environment for ``image`` (built on first use, with its progress in every host's log), with the
    job's own ``requirements`` installed in it; raises :class:`JobRequestError` when none can be had (no
    interpreter of the image's Python, a failed build)."""
    from mlops.local.images.environments import (
        ImageEnvError,
        choose,
        prepare,
        requirements_lines,
        rules_from_config,
        with_requirements,
    )

    def progress(line: str) -> None:
        for lp in log_paths:
            job_warning(lp, lp.stem, line, on_log, level="INFO")

    try:
        choice = choose(image or "", rules_from_config(images or {}))
        if requirements is not None:
            lines, skipped = requirements_lines(requirements.text)
            for line in skipped:
                progress(f"{requirements.source}: {line!r} is left to pip in the job (not resolvable here)")
            if lines:
                progress(f"installing {len(lines)} requirements of {requirements.source} before the job")
            choice = with_requirements(choice, lines, requirements.source)
        env = prepare(choice, on_progress=progress)
    except ImageEnvError as err:
        extra = f" (with {requirements.source})" if requirements is not None and choice.builds else ""
        raise JobRequestError(f"{err}{extra}") from err
    # The project's own environment is in every sandbox's root already.
    own = env.choice.mode == "project"
    mounts = [] if own else [sandbox.Mount(str(p), Path(p), read_only=True) for p in env.prefixes]
    return StandIn(env, mounts)
