"""``mlops.local.logs`` on a real home: resolving an execution, finding a step's log files, reading them
incrementally and following an execution until it ends (the test writes the files between two polls)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlops.errors import MlopsError
from mlops.local.logs import ExecutionLogs, LogLine, LogsError, LogSource, step_sources
from mlops.local.state.home import Home

DEFINITION = {
    "Version": "2020-12-01",
    "Steps": [
        {"Name": "Prep", "Type": "Processing", "Arguments": {}},
        {"Name": "Train", "Type": "Training", "Arguments": {}, "DependsOn": ["Prep"]},
    ],
}


@pytest.fixture
def home(tmp_path) -> Home:
    return Home.open(tmp_path / "home")


def started(home: Home, execution_id: str, at: str = "2026-01-01T00:00:00") -> str:
    home.runs.create(execution_id, "p", DEFINITION, {})
    with home.db() as con:  # a known start time orders the executions
        con.execute("UPDATE executions SET started_at = ? WHERE id = ?", (at, execution_id))
    return execution_id


def job_dir(home: Home, execution_id: str, step: str, attempt: int = 1) -> Path:
    path = home.execution_dir(execution_id) / step / f"attempt-{attempt}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def texts(items) -> list[str]:
    return [i.text if isinstance(i, LogLine) else f"== {i.label}" for i in items]


# ------------------------------------------------------------------------------------------- resolving


def test_latest_an_id_and_a_unique_prefix(home):
    started(home, "abc111", "2026-01-01T00:00:00")
    started(home, "abd222", "2026-01-02T00:00:00")
    assert home.runs.resolve("latest") == "abd222"
    assert home.runs.resolve("abc111") == "abc111"
    assert home.runs.resolve("abc") == "abc111"
    assert home.runs.resolve(" abd2 ") == "abd222"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ab", "execution prefix 'ab' is ambiguous: it matches abd222, abc111"),
        ("zz", "no execution 'zz' in {root} (recent: abd222, abc111; or 'latest')"),
        ("a%", "no execution 'a%' in {root} (recent: abd222, abc111; or 'latest')"),  # % is no wildcard
        ("a_c", "no execution 'a_c' in {root} (recent: abd222, abc111; or 'latest')"),
        ("", "no execution '' in {root} (recent: abd222, abc111; or 'latest')"),
    ],
)
def test_what_does_not_name_one_execution(home, text, message):
    started(home, "abc111", "2026-01-01T00:00:00")
    started(home, "abd222", "2026-01-02T00:00:00")
    with pytest.raises(MlopsError) as err:
        home.runs.resolve(text)
    assert str(err.value) == message.format(root=home.root)


def test_latest_in_an_empty_home(home):
    with pytest.raises(MlopsError, match="^no executions in .* yet$"):
        home.runs.resolve("latest")


# ------------------------------------------------------------------------------------ the files of a step


def test_a_running_step_s_files_are_found_in_its_job_dir_then_its_recorded_ones_are_used(home, tmp_path):
    eid = started(home, "e1")
    jd = job_dir(home, eid, "Tune")
    for trial in ("tune-002-x", "tune-010-y"):
        (jd / trial).mkdir()
        (jd / trial / "algo-1.log").write_text("t\n")
    (jd / "algo-1").mkdir()  # a host's sandbox dir, not a trial
    (jd / "algo-1" / "algo-1.log").write_text("not a log\n")
    row = {"name": "Tune", "status": "Executing", "job_dir": str(jd), "log_paths": None}
    assert [s.host for s in step_sources("Tune", row)] == ["tune-002-x/algo-1", "tune-010-y/algo-1"]

    cached_from = job_dir(home, "older", "Prep")
    done = {
        "status": "Succeeded",
        "job_dir": str(cached_from),
        "log_paths": [str(cached_from / "algo-2.log")],
    }
    assert step_sources("Prep", done) == [LogSource("Prep", "algo-2", cached_from / "algo-2.log")]
    assert step_sources("Check", {"status": "Succeeded", "job_dir": None, "log_paths": None}) == []


def test_read_gives_each_file_then_its_lines_in_start_order_without_the_host_prefix(home):
    eid = started(home, "e1")
    for name, lines in (("Prep", {"algo-1": "[algo-1] p1\n[mlops] WARNING: x\n", "algo-2": "[algo-2] p2\n"}),
                        ("Train", {"algo-1": "[algo-1] t1\nno end"})):  # fmt: skip
        jd = job_dir(home, eid, name)
        for host, text in lines.items():
            (jd / f"{host}.log").write_text(text)
        home.runs.upsert_step(eid, name, type="Processing", status="Executing", job_dir=str(jd))
    with home.db() as con:
        con.execute("UPDATE steps SET started_at = CASE name WHEN 'Prep' THEN 'a' ELSE 'b' END")
    assert texts(ExecutionLogs(home, eid).read()) == [
        "== Prep/algo-1", "p1", "[mlops] WARNING: x", "== Prep/algo-2", "p2", "== Train/algo-1", "t1", "no end",
    ]  # fmt: skip
    assert texts(ExecutionLogs(home, eid, step="Prep", host="algo-2").read()) == ["== Prep/algo-2", "p2"]
    assert texts(ExecutionLogs(home, eid, host="algo-2").read()) == ["== Prep/algo-2", "p2"]


def test_lines_keeps_the_last_n_even_across_read_chunks(home):
    eid = started(home, "e1")
    jd = job_dir(home, eid, "Prep")
    body = "".join(f"line {i:05d} {'x' * 200}\n" for i in range(2000))  # about 400 KB
    (jd / "algo-1.log").write_text(body + "partial")
    home.runs.upsert_step(eid, "Prep", type="Processing", status="Executing", job_dir=str(jd))
    got = texts(ExecutionLogs(home, eid, lines=3).read())
    assert [t[:10] for t in got] == ["== Prep/al", "line 01997", "line 01998", "line 01999", "partial"]
    assert texts(ExecutionLogs(home, eid, lines=0).read()) == ["== Prep/algo-1", "partial"]
    assert len(texts(ExecutionLogs(home, eid, lines=5000).read())) == 2002


# ---------------------------------------------------------------------------------------------- following


def test_follow_reads_new_lines_picks_up_later_steps_and_ends_with_the_execution(home):
    eid = started(home, "e1")
    prep = job_dir(home, eid, "Prep")
    home.runs.upsert_step(eid, "Prep", type="Processing", status="Executing", job_dir=str(prep))
    home.runs.upsert_step(eid, "Train", type="Training", status="Pending")
    log = prep / "algo-1.log"  # not written yet
    seen: list[list[str]] = []
    items: list = []

    def between_polls(_interval):  # what the runtime does while the follower sleeps
        seen.append(texts(items))
        items.clear()
        step = len(seen)
        if step == 1:
            log.write_text("[algo-1] one\n[algo-1] hal")
        elif step == 2:
            with log.open("a") as f:
                f.write("f a line\n")
            train = job_dir(home, eid, "Train")
            (train / "algo-1.log").write_text("[algo-1] training\n")
            home.runs.upsert_step(eid, "Train", status="Executing", job_dir=str(train))
        elif step == 3:
            with log.open("a") as f:
                f.write("[algo-1] last, unterminated")
            home.runs.finish(eid, "Failed", "Train failed")
        assert step < 5, "the follower did not end"

    for item in ExecutionLogs(home, eid).follow(interval=0, sleep=between_polls):
        items.append(item)
    seen.append(texts(items))
    assert seen == [
        [],  # the file did not exist yet
        ["== Prep/algo-1", "one"],  # a complete line only
        ["half a line", "== Train/algo-1", "training"],  # a step that started later
        ["last, unterminated"],  # the execution ended: the rest, and the iterator ends
    ]


def test_a_file_written_again_from_the_start_is_read_from_the_start(home):
    eid = started(home, "e1")
    prep = job_dir(home, eid, "Prep")
    home.runs.upsert_step(eid, "Prep", type="Processing", status="Executing", job_dir=str(prep))
    log = prep / "algo-1.log"
    log.write_text("[algo-1] a long first attempt line\n")
    calls = []

    def between_polls(_interval):
        calls.append(1)
        if len(calls) == 1:
            log.unlink()  # as make_host_dirs does before the job writes it again
            log.write_text("[algo-1] new\n")
        else:
            home.runs.finish(eid, "Succeeded", None)

    got = texts(ExecutionLogs(home, eid).follow(interval=0, sleep=between_polls))
    assert got == ["== Prep/algo-1", "a long first attempt line", "new"]


def test_follow_ends_when_the_executor_died_without_recording_an_outcome(home):
    eid = started(home, "e1")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with home.db() as con:
        con.execute("UPDATE executions SET pid = ? WHERE id = ?", (dead.pid, eid))
    jd = job_dir(home, eid, "Prep")
    (jd / "algo-1.log").write_text("[algo-1] before the crash\n")
    home.runs.upsert_step(eid, "Prep", type="Processing", status="Executing", job_dir=str(jd))
    assert texts(ExecutionLogs(home, eid).follow(interval=0, sleep=lambda _: None)) == [
        "== Prep/algo-1",
        "before the crash",
    ]
    assert home.runs.get(eid)["status"] == "Failed"


@pytest.mark.parametrize(
    ("step", "host", "message"),
    [
        ("Nope", None, "no step 'Nope' in execution e1 (steps: Prep, Train)"),
        ("Prep", "algo-3", "no host 'algo-3' in the logs of step Prep (hosts: algo-1)"),
        (None, "algo-3", "no host 'algo-3' in the logs of execution e1 (hosts: algo-1)"),
    ],
)
def test_unknown_step_or_host_names_the_choices(home, step, host, message):
    eid = started(home, "e1")
    jd = job_dir(home, eid, "Prep")
    (jd / "algo-1.log").write_text("x\n")
    home.runs.upsert_step(eid, "Prep", type="Processing", status="Succeeded", job_dir=str(jd),
                          log_paths=[str(jd / "algo-1.log")])  # fmt: skip
    home.runs.finish(eid, "Succeeded", None)
    with pytest.raises(LogsError) as err:
        list(ExecutionLogs(home, eid, step=step, host=host).read())
    assert str(err.value) == message


def test_a_host_not_seen_yet_is_waited_for_while_its_step_runs(home):
    eid = started(home, "e1")
    jd = job_dir(home, eid, "Prep")
    home.runs.upsert_step(eid, "Prep", type="Processing", status="Executing", job_dir=str(jd))
    assert list(ExecutionLogs(home, eid, step="Prep", host="algo-2").read()) == []
