"""The job logs of a local execution: which files each step's hosts write, read once or followed.

A step's hosts write ``<home>/executions/<id>/<step>/attempt-N/<host>.log`` (a Tuning step one dir per
trial, a Lambda step ``lambda.log``). While a step runs only its ``job_dir`` is recorded, so its logs are
found there; once it ends its recorded ``log_paths`` are the list (a cache hit's are the cached step's).

Library code: no printing. :class:`ExecutionLogs` yields :class:`LogSource` (a file seen for the first time)
and :class:`LogLine` items; the CLI (``mlops logs``) renders them, and a report can do the same.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError
from mlops.local.state.home import Home

TERMINAL_EXECUTION = ("Succeeded", "Failed", "Stopped")
TERMINAL_STEP = ("Succeeded", "Failed", "Stopped", "NotExecuted")
_HOST_DIR = re.compile(r"^algo-\d+$")
_CHUNK = 64 * 1024


class LogsError(MlopsError):
    """An execution, step or host that is not there; the message names it and the choices."""


def _choices(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "") if names else "none"


@dataclass(frozen=True)
class LogSource:
    """One host's log file of one step."""

    step: str
    host: str  # algo-1, lambda, or <trial>/algo-1 for a Tuning step's trial
    path: Path

    @property
    def label(self) -> str:
        return f"{self.step}/{self.host}"


@dataclass(frozen=True)
class LogLine:
    source: LogSource
    text: str  # without its line end, nor the ``[algo-N] `` the runtime writes before each job line


def host_matches(host: str, wanted: str) -> bool:
    """``--host algo-2`` matches algo-2 and every Tuning trial's algo-2 (``<trial>/algo-2``)."""
    return host == wanted or host.rsplit("/", 1)[-1] == wanted


def _natural(text: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text)]


def step_sources(step: str, row: dict[str, Any]) -> list[LogSource]:
    """The log files of one step row (``runs.steps``): recorded ones once it ended, else what its job dir
    holds so far."""
    job_dir = Path(row["job_dir"]) if row.get("job_dir") else None
    paths: list[Path] = [Path(p) for p in row.get("log_paths") or []]
    if not paths and job_dir is not None:  # running, or ended without recording them (a dead executor)
        paths = sorted(job_dir.glob("*.log"))
        for sub in sorted(p for p in _dirs(job_dir) if not _HOST_DIR.match(p.name)):
            paths += sorted(sub.glob("algo-*.log"))  # a Tuning step's trials
    sources = []
    for path in paths:
        try:
            host = str(path.relative_to(job_dir).with_suffix("")) if job_dir else path.stem
        except ValueError:
            host = path.stem
        sources.append(LogSource(step, host, path))
    return sorted(sources, key=lambda s: _natural(s.host))


def _dirs(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


@dataclass
class _Cursor:
    offset: int = 0
    partial: bytes = b""
    inode: int | None = None


@dataclass
class ExecutionLogs:
    """The logs of one execution, optionally one step and one host; read with :meth:`read` or
    :meth:`follow`.

    ``lines``: only the last N lines of each file already written when it is first seen (``tail -n``).
    """

    home: Home
    execution_id: str
    step: str | None = None
    host: str | None = None
    lines: int | None = None
    _cursors: dict[LogSource, _Cursor] = field(default_factory=dict, init=False)
    _order: dict[str, int] = field(default_factory=dict, init=False)
    _passes: int = field(default=0, init=False)  # --lines applies to what the first pass finds

    # ------------------------------------------------------------------------------------------ state

    def execution(self) -> dict[str, Any]:
        row = self.home.runs.get(self.execution_id)  # reaps an executor that died, so following ends
        if row is None:
            raise LogsError(f"no execution {self.execution_id} in {self.home.root}")
        return row

    def step_names(self, execution: dict[str, Any] | None = None) -> list[str]:
        """Every step of the execution: its recorded rows in start order, then the definition's others."""
        names = [r["name"] for r in self.home.runs.steps(self.execution_id)]
        execution = execution or self.execution()
        try:
            from mlops.definition.model import parse

            names += [n for n in parse(json.loads(execution["definition"])).order if n not in names]
        except (MlopsError, ValueError):
            pass
        return names

    def check(self) -> None:
        """Refuse an unknown step, and a host none of the chosen steps has once they all ended."""
        execution = self.execution()
        names = self.step_names(execution)
        if self.step is not None and self.step not in names:
            raise LogsError(
                f"no step {self.step!r} in execution {self.execution_id} (steps: {_choices(names)})"
            )
        if self.host is None:
            return
        rows = self._rows()
        if any(r["status"] not in TERMINAL_STEP for r in rows.values()) and (
            execution["status"] not in TERMINAL_EXECUTION
        ):
            return  # a running step's hosts may not have written anything yet
        hosts = sorted({s.host for r in rows.values() for s in step_sources(r["name"], r)}, key=_natural)
        if not any(host_matches(h, self.host) for h in hosts):
            where = f"step {self.step}" if self.step else f"execution {self.execution_id}"
            raise LogsError(f"no host {self.host!r} in the logs of {where} (hosts: {_choices(hosts)})")

    def _rows(self) -> dict[str, dict[str, Any]]:
        rows = {r["name"]: r for r in self.home.runs.steps(self.execution_id)}
        return {n: r for n, r in rows.items() if self.step is None or n == self.step}

    def sources(self) -> list[LogSource]:
        """The chosen log files known now, in step start order."""
        found = []
        for name, row in self._rows().items():  # in start order, then (not started) by name
            chosen = [
                s for s in step_sources(name, row) if self.host is None or host_matches(s.host, self.host)
            ]
            if chosen:
                self._order.setdefault(name, len(self._order))  # a step keeps its place once it has logs
            found += chosen
        return sorted(found, key=lambda s: self._order[s.step])

    # ---------------------------------------------------------------------------------------- reading

    def _read(self, source: LogSource, final: bool) -> list[LogLine]:
        """The complete lines written to ``source`` since the last read (``final``: the unfinished last
        line too). A file that does not exist yet reads as empty; one that shrank or was replaced is
        read again from its start."""
        cursor = self._cursors.setdefault(source, _Cursor())
        try:
            fh = open(source.path, "rb")  # noqa: SIM115
        except OSError:
            return []
        with fh:
            stat = os.fstat(fh.fileno())
            if cursor.inode not in (None, stat.st_ino) or stat.st_size < cursor.offset:
                cursor.offset, cursor.partial = 0, b""
            first = cursor.inode is None
            cursor.inode = stat.st_ino
            if first and self.lines is not None and not self._passes:
                cursor.offset = _tail_offset(fh, stat.st_size, self.lines)
            fh.seek(cursor.offset)
            data = fh.read()
        cursor.offset += len(data)
        data = cursor.partial + data
        chunks = data.split(b"\n")
        cursor.partial = chunks.pop()
        if final and cursor.partial:
            chunks.append(cursor.partial)
            cursor.partial = b""
        own = f"[{source.host.rsplit('/', 1)[-1]}] "  # what the runtime writes before each job line
        return [LogLine(source, _strip(c.rstrip(b"\r").decode("utf-8", "replace"), own)) for c in chunks]

    def _pass(self, final: bool) -> Iterator[LogSource | LogLine]:
        for source in self.sources():
            if source not in self._cursors:
                yield source
            yield from self._read(source, final)
        self._passes += 1

    def read(self) -> Iterator[LogSource | LogLine]:
        """What is written now, once: each file (a :class:`LogSource`) followed by its lines."""
        self.check()
        yield from self._pass(final=True)

    def follow(
        self, interval: float = 0.2, sleep: Callable[[float], Any] = time.sleep
    ) -> Iterator[LogSource | LogLine]:
        """New lines as they are written, steps that start later included, until the execution reaches a
        terminal status; then the rest of every file, and the iterator ends."""
        self.check()
        while True:
            ended = self.execution()["status"] in TERMINAL_EXECUTION  # read before the files: then final
            yield from self._pass(final=ended)
            if ended:
                return
            sleep(interval)


def _strip(text: str, prefix: str) -> str:
    return text[len(prefix) :] if text.startswith(prefix) else text


def _tail_offset(fh, size: int, lines: int) -> int:
    """The offset where the last ``lines`` complete lines of the file start (0 for all of it)."""
    if lines <= 0:
        return _last_newline(fh, size)
    end = size
    fh.seek(max(0, size - 1))
    if size and fh.read(1) != b"\n":
        end = _last_newline(fh, size)  # an unfinished last line is not counted, and is read later
    pos, seen = end, 0
    while pos > 0:
        step = min(_CHUNK, pos)
        fh.seek(pos - step)
        block = fh.read(step)
        # newlines before ``end`` (the one ending the last counted line is excluded)
        limit = len(block) - (1 if pos == end else 0)
        idx = limit
        while True:
            idx = block.rfind(b"\n", 0, idx)
            if idx < 0:
                break
            seen += 1
            if seen == lines:
                return pos - step + idx + 1
        pos -= step
    return 0


def _last_newline(fh, size: int) -> int:
    """The offset just past the file's last newline (0 when it has none)."""
    pos = size
    while pos > 0:
        step = min(_CHUNK, pos)
        fh.seek(pos - step)
        idx = fh.read(step).rfind(b"\n")
        if idx >= 0:
            return pos - step + idx + 1
        pos -= step
    return 0
