"""The project's schedules: next run times (AWS cron in a time zone, across DST), the local scheduler's starts
and records, and the real CLI rehearsing a due time."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from mlops.local.schedule import LocalScheduler, ProjectSchedule, read_starts
from mlops.schedule_expressions import ScheduleError, occurrences, parse_schedule
from tests.project import ROOT


def schedule(expression: str, tz: str = "UTC", path: str = "schedule", pipeline: str = "model-build"):
    return ProjectSchedule(path, pipeline, expression, tz, True, 0, parse_schedule(expression, tz))


def test_next_times_keep_the_local_hour_across_a_dst_change():
    # 03:00 in Berlin is 02:00 UTC in winter and 01:00 UTC after the spring change (2027-03-28)
    times = occurrences(
        parse_schedule("cron(0 3 ? * * *)", "Europe/Berlin"), datetime(2027, 3, 26, tzinfo=UTC), 3
    )
    assert [t.strftime("%m-%d %H:%M") for t in times] == ["03-26 02:00", "03-27 02:00", "03-28 01:00"]
    # the first Monday of each month, AWS's 2#1 (Sunday is 1)
    mondays = occurrences(parse_schedule("cron(30 6 ? * 2#1 *)"), datetime(2026, 12, 1, tzinfo=UTC), 2)
    assert [t.date().isoformat() for t in mondays] == ["2026-12-07", "2027-01-04"]


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("cron(99 99 ? * FOO *)", "Minutes value '99' is outside 0-59"),
        ("cron(0 3 * * MON *)", "exactly one of Day-of-month and Day-of-week must be '?'"),
        ("cron(0 3 ? * * )", "6 fields"),
        ("rate(0 minutes)", "positive"),
        ("every day", "expected at("),
    ],
)
def test_bad_expressions_name_what_is_wrong(expression, words):
    with pytest.raises(ScheduleError, match=words.replace("(", r"\(").replace("?", r"\?")):
        parse_schedule(expression)


def test_the_scheduler_starts_each_due_time_and_records_it(tmp_path):
    now = [datetime(2026, 12, 1, 2, 58, tzinfo=UTC)]
    started = []

    def starter(s, log_path):
        started.append((s.pipeline, now[0]))
        now[0] += timedelta(minutes=5)  # the run takes 5 minutes
        return 0 if s.pipeline == "model-build" else 3

    def sleep(seconds):
        now[0] += timedelta(seconds=seconds)

    schedules = [
        schedule("cron(0 3 ? * * *)"),
        schedule("cron(*/2 3 ? * * *)", path="batch", pipeline="batch-score"),
    ]
    starts = LocalScheduler(tmp_path, schedules, starter, clock=lambda: now[0], sleep=sleep).run(max_starts=3)
    assert [(s.pipeline, s.due[11:16]) for s in starts] == [
        ("model-build", "03:00"), ("batch-score", "03:00"), ("batch-score", "03:10")]  # fmt: skip
    # batch-score came due at 03:02 .. 03:10 while its 03:00 run went on (03:05-03:10): 03:10 starts, once,
    # and the four before it are counted as skipped
    assert starts[1].skipped == 4 and starts[2].exit_code == 3
    assert [r["pipeline"] for r in read_starts(tmp_path)] == ["model-build", "batch-score", "batch-score"]


def test_a_disabled_schedule_never_starts(tmp_path):
    off = ProjectSchedule(
        "schedule", "model-build", "rate(1 minute)", "UTC", False, 0, parse_schedule("rate(1 minute)")
    )
    assert LocalScheduler(tmp_path, [off], lambda s, p: 0).run(max_starts=1) == []


def mlops(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlops.cli.main", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def test_show_lists_both_schedules_with_their_next_times_in_json():
    res = mlops("schedule", "show", "--env", "prod", "--format", "json", "--count", "3",
                "--after", "2027-03-27T00:00:00Z")  # fmt: skip
    assert res.returncode == 0, res.stderr
    shown = {s["schedule"]: s for s in json.loads(res.stdout)}
    assert shown["schedule"]["pipeline"] == "model-build"
    assert shown["batch_score.schedule"]["pipeline"] == "batch-score"
    retrain = shown["schedule"]
    assert retrain["timezone"] == "Europe/Dublin" and len(retrain["next"]) == 3


def test_run_rehearses_a_due_time_with_the_real_start_path(tmp_path):
    # batch-score is due daily at 05:00 UTC in the local config; nothing is Approved in a fresh home, so the
    # start is refused by the run's own check, and the scheduler records that exit
    res = mlops("schedule", "run", "--home", str(tmp_path), "--rehearse-from", "2026-12-02T04:59:58Z",
                "--max-starts", "1", timeout=300)  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    (start,) = read_starts(tmp_path)
    assert start["pipeline"] == "batch-score" and start["due"] == "2026-12-02T05:00:00+00:00"
    assert start["exit_code"] != 0
    assert "no Approved version" in open(start["log"]).read()
