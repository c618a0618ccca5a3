"""``mlops logs``, ``mlops run --logs`` on a terminal and ``mlops graph --execution`` on real local runs.

One pipeline built with the SageMaker SDK (Talk on 2 hosts prints, sleeps, prints -> After -> Boom fails
-> Never), run by the real ``mlops run`` in a subprocess, read and followed by ``mlops logs`` in another.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mlops.local.runtime import sandbox
from mlops.local.state.home import Home
from tests.project import ROOT

SLEEP_S = 4  # room for the follower to start while Talk still runs, on a loaded machine
TALK = (
    f"import time; print('first line', flush=True); time.sleep({SLEEP_S}); print('second line', flush=True)"
)
ROLE = "arn:aws:iam::111122223333:role/R"
# the job sandbox: namespaces where this machine has them, else mapped paths (as tests/test_cli.py allows)
ENV = {"MLOPS_SANDBOX": "bwrap" if sandbox.bwrap_works() else "none"}


def talk_pipeline() -> dict:
    from tests.local.test_lambda_step import sdk_session

    session = sdk_session()  # sets the region the SDK's imports need
    from sagemaker.core.processing import Processor
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import ProcessingStep

    def step(name: str, script: str, count: int = 1, after=None) -> ProcessingStep:
        processor = Processor(
            role=ROLE, image_uri="python", instance_count=count, instance_type="ml.m5.large",
            entrypoint=["python3", "-c", script], sagemaker_session=session, volume_size_in_gb=1,
        )  # fmt: skip
        return ProcessingStep(name=name, step_args=processor.run(), depends_on=[after] if after else None)

    talk = step("Talk", TALK, count=2)
    after = step("After", "print('after', flush=True)", after=talk)
    boom = step("Boom", "import sys; print('going down'); sys.exit(3)", after=after)
    never = step("Never", "print('never')", after=boom)
    pipeline = Pipeline(name="talk", steps=[talk, after, boom, never], sagemaker_session=session)
    return json.loads(pipeline.definition())


@pytest.fixture(scope="module")
def definition_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("talk") / "talk.json"
    path.write_text(json.dumps(talk_pipeline()))
    return path


def mlops(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops.cli", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, **ENV}, timeout=120, **kwargs,
    )  # fmt: skip


def popen(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mlops.cli", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV},
    )  # fmt: skip


def wait_for(predicate, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def followed(definition_file, tmp_path_factory):
    """The run, followed from its start by ``mlops logs ID -f``: (home, execution id, [(arrival, line)],
    the follower's exit code and stderr, the run's output)."""
    home = tmp_path_factory.mktemp("home")
    run = popen("run", "--definition", definition_file, "--home", home)
    try:
        execution_id = wait_for(
            lambda: (Home.open(home).runs.list(limit=1) or [{}])[0].get("id"), what="the execution to start"
        )
        follower = popen("logs", execution_id, "-f", "--home", home)
        arrivals = []
        for line in follower.stdout:  # line by line, as the follower flushes them
            arrivals.append((datetime.now(UTC), line.rstrip("\n")))
        code = follower.wait(timeout=60)
        stderr = follower.stderr.read()
    finally:
        run_out = run.communicate(timeout=120)
    return home, execution_id, arrivals, code, stderr, run_out


def steps_of(home, execution_id) -> dict[str, dict]:
    return {s["name"]: s for s in Home.open(home).runs.steps(execution_id)}


def test_follow_shows_lines_while_the_step_runs_and_exits_when_the_execution_ends(followed):
    home, execution_id, arrivals, code, stderr, _ = followed
    lines = [line for _, line in arrivals]
    assert code == 0, stderr
    talk = steps_of(home, execution_id)["Talk"]
    assert Home.open(home).runs.get(execution_id)["status"] == "Failed"  # it ended by itself on Failed
    first = next(at for at, line in arrivals if line == "[Talk/algo-1] first line")
    second = next(at for at, line in arrivals if line == "[Talk/algo-1] second line")
    assert first < datetime.fromisoformat(talk["ended_at"])  # printed while Talk still ran
    assert (second - first).total_seconds() > SLEEP_S - 1  # as written, not all at the end
    # a header per step and host; steps that started later were picked up, the failed one's line too
    headers = [line.split(" (")[0] for line in lines if line.startswith("==> ")]
    assert headers == ["==> Talk/algo-1", "==> Talk/algo-2", "==> After/algo-1", "==> Boom/algo-1"]
    assert "[Talk/algo-2] second line" in lines and "[After/algo-1] after" in lines
    assert "[Boom/algo-1] going down" in lines
    assert not any(line.startswith("[Never/") for line in lines)


def test_latest_and_a_prefix_print_the_same_logs(followed):
    home, execution_id, *_ = followed
    latest = mlops("logs", "latest", "--home", home)
    prefix = mlops("logs", execution_id[:5], "--home", home)
    assert latest.returncode == 0 and prefix.returncode == 0, latest.stderr + prefix.stderr
    assert latest.stdout == prefix.stdout
    lines = latest.stdout.splitlines()
    assert lines[0].startswith(
        f"==> Talk/algo-1 ({home}/executions/{execution_id}/Talk/attempt-1/algo-1.log)"
    )
    assert lines[1:3] == ["[Talk/algo-1] first line", "[Talk/algo-1] second line"]


def test_one_step_and_one_host(followed):
    home, execution_id, *_ = followed
    one = mlops("logs", execution_id, "Talk", "--host", "algo-2", "--home", home)
    assert one.returncode == 0, one.stderr
    assert one.stdout.splitlines() == ["first line", "second line"]  # one file: its lines as they are
    step = mlops("logs", execution_id, "Talk", "--home", home)
    assert [line.split(" (")[0] for line in step.stdout.splitlines() if line.startswith("==>")] == [
        "==> Talk/algo-1",
        "==> Talk/algo-2",
    ]
    tail = mlops("logs", execution_id, "Talk", "--host", "algo-1", "--lines", "1", "--home", home)
    assert tail.stdout.splitlines() == ["second line"]
    quiet = mlops("logs", execution_id, "Never", "--home", home)  # never ran: no logs, said on stderr
    assert quiet.returncode == 0 and quiet.stdout == "" and "no job logs" in quiet.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Nope"], "error: no step 'Nope' in execution {id} (steps: Talk, After, Boom, Never)"),
        (["Talk", "--host", "algo-3"], "error: no host 'algo-3' in the logs of step Talk (hosts: algo-1, algo-2)"),
        (["--host", "algo-9"], "error: no host 'algo-9' in the logs of execution {id} (hosts: algo-1, algo-2)"),
    ],
)  # fmt: skip
def test_unknown_step_or_host_is_one_line_naming_the_choices(followed, args, message):
    home, execution_id, *_ = followed
    proc = mlops("logs", execution_id, *args, "--home", home)
    assert proc.returncode == 1
    assert proc.stderr.strip() == message.format(id=execution_id)


def test_unknown_execution_names_the_recent_ones(followed):
    home, execution_id, *_ = followed
    proc = mlops("logs", "zzz", "--home", home)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: no execution 'zzz' in {home} (recent: {execution_id}; or 'latest')"


def test_graph_of_the_execution_colours_each_step_by_its_status(followed, tmp_path):
    home, execution_id, *_ = followed
    proc = mlops("graph", "--execution", "latest", "--home", home, "--out", tmp_path / "run.svg")
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "run.mmd").read_text()
    assert proc.stdout.startswith(text)
    assert 'Talk["Talk<br/><small>Processing · Succeeded</small>"]' in text
    assert "    class Talk,After succeeded" in text
    assert "    class Boom failed" in text and "    class Never notrun" in text
    assert "    classDef failed fill:#f8d4d4,stroke:#c62828" in text
    if (tmp_path / "run.svg").exists():  # graphviz installed
        svg = (tmp_path / "run.svg").read_text()
        assert 'fill="#f8d4d4"' in svg and 'fill="#d3f0d8"' in svg


def read_pty(master: int, proc: subprocess.Popen, timeout: float = 120.0) -> str:
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the terminal closed: the run ended
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif proc.poll() is not None:
            break
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))


def test_run_logs_on_a_terminal_prints_job_lines_above_the_live_table(definition_file, tmp_path):
    master, slave = pty.openpty()
    env = {**os.environ, **ENV, "TERM": "xterm", "COLUMNS": "120", "LINES": "40"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.cli", "run", "--definition", str(definition_file), "--home",
         str(tmp_path), "--logs"],
        cwd=ROOT, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    try:
        screen = read_pty(master, proc)
    finally:
        os.close(master)
    assert proc.wait(timeout=30) == 1  # Boom fails the execution
    lines = [line.strip() for line in screen.replace("\r", "\n").splitlines()]
    for line in ("Talk [algo-1] first line", "Talk [algo-2] second line", "After [algo-1] after"):
        assert line in lines, screen[-2000:]
    assert any(line.startswith("┃ step") for line in lines)  # the live table, drawn on the terminal
    # each log line is printed once, above the table: never folded into it
    assert lines.count("Talk [algo-1] first line") == 1


def test_ctrl_c_while_following_exits_130_quietly(tmp_path):
    import signal

    home = Home.open(tmp_path)
    home.runs.create("live1", "p", {"Version": "2020-12-01", "Steps": []}, {})  # this process: alive
    jd = home.execution_dir("live1") / "Prep" / "attempt-1"
    jd.mkdir(parents=True)
    (jd / "algo-1.log").write_text("[algo-1] working\n")
    home.runs.upsert_step("live1", "Prep", type="Processing", status="Executing", job_dir=str(jd))
    follower = popen("logs", "live1", "-f", "--home", tmp_path)
    assert follower.stdout.readline().startswith("==> Prep/algo-1")
    assert follower.stdout.readline() == "[Prep/algo-1] working\n"
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=30) == 130
    assert follower.stderr.read() == ""
