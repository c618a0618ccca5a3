"""The project's schedules on this machine: when they run next, and a scheduler that starts them.

A schedule is a config section of type :class:`mlops.config.Schedule` (its expression, ``Timezone``,
``enabled``, flexible window) and the pipeline it starts (the project's declaration names which: the
retraining ``schedule`` starts ``model-build``). On AWS it is an EventBridge Scheduler schedule whose
target starts the pipeline with its default parameters (``infra/mlops.yaml``); :class:`LocalScheduler` does
the same here: at each due time it starts ``mlops run --pipeline <key>`` as its own process with no parameters
(what the start path resolves itself, e.g. batch scoring's Approved version, it resolves here too) and
records each start in ``<home>/schedule/starts.jsonl``, with the run's output in a log beside it.

Times come from :mod:`mlops.schedule_expressions`. A flexible window lets AWS start anywhere within it;
the local scheduler starts at the due time and says so. A due time that passes while a run is still going
is started once that run ends (EventBridge would start it beside it; one run at a time keeps a 2-core
machine usable), and the ones it skipped are counted in the record.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError
from mlops.schedule_expressions import Schedule, occurrences, parse_schedule

log = logging.getLogger(__name__)


class ScheduleConfigError(MlopsError):
    """A schedule the declaration names is not in the config."""


@dataclass(frozen=True)
class ProjectSchedule:
    path: str  # where it is in the config, e.g. "schedule" or "batch_score.schedule"
    pipeline: str  # the pipeline key it starts
    expression: str
    timezone: str
    enabled: bool
    window_minutes: int
    schedule: Schedule

    def next_times(self, after: datetime, count: int) -> list[datetime]:
        return occurrences(self.schedule, after, count)


def project_schedules(cfg: Any, declared: dict[str, str]) -> list[ProjectSchedule]:
    """The schedules ``declared`` (config path -> pipeline key) as the config ``cfg`` sets them."""
    out = []
    for path, pipeline in declared.items():
        node = cfg
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                raise ScheduleConfigError(
                    f"the project declares schedule {path!r}, which the config does not have"
                )
        out.append(
            ProjectSchedule(
                path, pipeline, node.cron, node.timezone, node.enabled, node.flexible_window_minutes,
                parse_schedule(node.cron, node.timezone),
            )
        )  # fmt: skip
    return out


@dataclass
class Start:
    """One start of a pipeline by its schedule, as recorded."""

    schedule: str
    pipeline: str
    due: str
    started: str
    ended: str | None = None
    exit_code: int | None = None
    skipped: int = 0  # due times that passed while an earlier run was going
    log: str = ""


def read_starts(home: Path) -> list[dict]:
    path = Path(home) / "schedule" / "starts.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


Starter = Callable[[ProjectSchedule, Path], int]  # (schedule, log path) -> exit code


def cli_starter(home: Path, env: str | None, project_dir: str | None = None) -> Starter:
    """Starts ``mlops run --pipeline <key>`` as its own process, as the Scheduler's target starts the pipeline."""

    def start(schedule: ProjectSchedule, log_path: Path) -> int:
        argv = [sys.executable, "-m", "mlops.cli.main"]
        if project_dir:
            argv += ["--project", project_dir]
        argv += ["run", "--pipeline", schedule.pipeline, "--home", str(home)]
        if env:
            argv += ["--env", env]
        with open(log_path, "ab") as out:
            return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ)).returncode

    return start


class LocalScheduler:
    """Starts each enabled schedule's pipeline at its due times. ``clock`` returns now (UTC); ``sleep``
    waits; ``rehearse_from``: the scheduler's clock starts at that instant and runs at real speed (to
    rehearse a schedule at the hour it is meant for)."""

    def __init__(
        self,
        home: Path,
        schedules: Iterable[ProjectSchedule],
        starter: Starter,
        *,
        clock: Callable[[], datetime] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rehearse_from: datetime | None = None,
        on_event: Callable[[str], None] | None = None,
    ):
        self.home = Path(home)
        self.schedules = [s for s in schedules if s.enabled]
        self.starter = starter
        real = clock or (lambda: datetime.now(UTC))
        if rehearse_from is not None:
            offset = rehearse_from - real()
            self.clock = lambda: real() + offset
        else:
            self.clock = real
        self.sleep = sleep
        self.on_event = on_event or (lambda line: log.info("%s", line))
        self.directory = self.home / "schedule"

    def _record(self, start: Start) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "starts.jsonl", "a") as f:
            f.write(json.dumps(start.__dict__) + "\n")

    def run(self, *, max_starts: int | None = None, until: datetime | None = None) -> list[Start]:
        """Until ``max_starts`` starts were made or the clock passes ``until`` (forever without either)."""
        starts: list[Start] = []
        if not self.schedules:
            self.on_event("no enabled schedule: nothing to start")
            return starts
        after = self.clock()
        upcoming = {s.path: s.next_times(after, 1) for s in self.schedules}
        while max_starts is None or len(starts) < max_starts:
            pending = [(times[0], s) for s in self.schedules if (times := upcoming[s.path])]
            if not pending:
                self.on_event("no schedule has a next run time")
                break
            due, schedule = min(pending, key=lambda item: item[0])
            if until is not None and due > until:
                break
            self.on_event(f"next: {schedule.pipeline} ({schedule.path}) at {due.isoformat()}")
            while (wait := (due - self.clock()).total_seconds()) > 0:
                self.sleep(min(wait, 30.0))
            starts.append(self._start(schedule, due))
            now = self.clock()
            later = [t for t in schedule.next_times(due, 1000) if t > due]
            skipped = [t for t in later if t <= now]
            if skipped:  # came due while the run was going: the latest of them starts next, once
                starts[-1].skipped = len(skipped) - 1
                upcoming[schedule.path] = [skipped[-1]]
            else:
                upcoming[schedule.path] = later[:1]
        return starts

    def _start(self, schedule: ProjectSchedule, due: datetime) -> Start:
        started = self.clock()
        self.directory.mkdir(parents=True, exist_ok=True)
        log_path = self.directory / f"{started.strftime('%Y%m%dT%H%M%SZ')}-{schedule.pipeline}.log"
        window = (
            f" (AWS may start it up to {schedule.window_minutes} min later)"
            if schedule.window_minutes
            else ""
        )
        self.on_event(f"starting {schedule.pipeline}: due {due.isoformat()}{window}; log {log_path}")
        try:
            code = self.starter(schedule, log_path)
        except OSError as err:
            log_path.write_text(f"could not start: {err}\n")
            code = 127
        start = Start(schedule.path, schedule.pipeline, due.isoformat(), started.isoformat(),
                      self.clock().isoformat(), code, 0, str(log_path))  # fmt: skip
        self._record(start)
        self.on_event(f"{schedule.pipeline} {'succeeded' if code == 0 else f'failed (exit {code})'}")
        return start


def local_zone_time(when: datetime, tz_name: str) -> str:
    from zoneinfo import ZoneInfo

    local = when.astimezone(ZoneInfo(tz_name))
    return local.strftime("%Y-%m-%d %H:%M %Z")


def window_end(when: datetime, minutes: int) -> datetime:
    return when + timedelta(minutes=minutes)
