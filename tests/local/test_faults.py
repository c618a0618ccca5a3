"""Correct across runs, on real processes and real signals: retries only for the runtime's own faults,
signal deaths named, no execution left Executing when its executor dies, resumes with their own
parameters and every attempt's log kept, checkpoints per execution synced while the job runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mlops.errors import ParameterError
from mlops.local.s3store import S3Store
from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home
from tests.local.conftest import HAS_BWRAP, needs_bwrap
from tests.local.test_executor import ROLE, _cli, definition, processing

# ------------------------------------------------------------------------------------------ helpers


def _write(tmp_path: Path, d: dict) -> Path:
    path = tmp_path / "def.json"
    path.write_text(json.dumps(d))
    return path


def _wait_for(predicate, timeout: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _log_says(tmp_path: Path, text: str) -> bool:
    # A finished host's container layer is deleted while we walk: what vanished is looked at next poll.
    for root, _dirs, files in os.walk(tmp_path / "executions"):
        for name in files:
            if name.endswith(".log"):
                with contextlib.suppress(FileNotFoundError):
                    if text in (Path(root) / name).read_text(errors="replace"):
                        return True
    return False


def _processes_with(marker: str) -> list[int]:
    """Live (non-zombie) processes whose command line holds ``marker`` (psutil is not installed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def _no_process_left(marker: str) -> None:
    _wait_for(lambda: not _processes_with(marker), timeout=15, what=f"processes with {marker!r} to end")


# --------------------------------------------------------------------------------- retries: by type only

ALWAYS_LOSES_ITS_HOST = "import time; print('waiting', flush=True); time.sleep(60)"


def _kill_supervisors(root: Path, stop: threading.Event, killed: list[int], only: str | None = None) -> None:
    """SIGKILL each job sandbox's supervisor under ``root`` once its job has logged: an "instance" lost.

    ``only`` limits it to one attempt directory (e.g. "attempt-1"), so a later attempt can finish."""
    while not stop.is_set():
        for pid in _processes_with("supervise.sh"):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                if Path(f"/proc/{pid}/comm").read_text().strip() != "bash":  # not the outer bwrap
                    continue
            except OSError:
                continue
            if str(root) not in cmdline or pid in killed:
                continue
            attempt_dir = Path(cmdline.split("\0")[-2]).parent.parent  # <attempt>/.sandbox/supervise.sh
            if only and attempt_dir.name != only:
                continue
            logs = list(attempt_dir.glob("*.log"))
            if logs and logs[0].read_text(errors="replace").strip():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)


@needs_bwrap
def test_a_runtime_fault_is_retried_with_max_attempts_and_backoff(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_SANDBOX", "bwrap")
    policy = {
        "ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 1, "BackoffRate": 2,
        "MaxAttempts": 2,
    }  # fmt: skip
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_supervisors, args=(tmp_path, stop, killed), daemon=True)
    killer.start()
    try:
        started = time.monotonic()
        record = run_definition(
            definition(processing("Lost", ALWAYS_LOSES_ITS_HOST, RetryPolicies=[policy])), home=tmp_path
        )
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        killer.join()
    step = record.steps["Lost"]
    assert record.status == "Failed"
    assert step.attempts == 3 and len(killed) == 3  # the first try and MaxAttempts retries
    assert elapsed >= 1 + 2  # IntervalSeconds, then IntervalSeconds * BackoffRate
    assert step.failure_reason.startswith("SageMaker.JOB_INTERNAL_ERROR: the job's sandbox supervisor ended")
    assert "Traceback" not in step.failure_reason and "\n" not in step.failure_reason
    retries = [e for e in Home.open(tmp_path).events.for_execution(record.id) if e["kind"] == "step-retry"]
    assert len(retries) == 2
    assert sorted(p.name for p in (tmp_path / "executions" / record.id / "Lost").iterdir()) == [
        "attempt-1", "attempt-2", "attempt-3",
    ]  # fmt: skip


@needs_bwrap
def test_a_runtime_fault_then_success_on_retry(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_SANDBOX", "bwrap")
    code = (
        "import json, sys, time; name = json.load(open('/opt/ml/config/processingjobconfig.json'))"
        "['ProcessingJobName']; print('attempt', name, flush=True); name.endswith('-r2') or time.sleep(60)"
    )
    policy = {"ExceptionType": ["SageMaker.JOB_INTERNAL_ERROR"], "IntervalSeconds": 0, "MaxAttempts": 2}
    stop, killed = threading.Event(), []
    killer = threading.Thread(
        target=_kill_supervisors, args=(tmp_path, stop, killed, "attempt-1"), daemon=True
    )
    killer.start()
    try:
        record = run_definition(definition(processing("Flaky", code, RetryPolicies=[policy])), home=tmp_path)
    finally:
        stop.set()
        killer.join()
    assert record.status == "Succeeded", record.failure_reason
    assert record.steps["Flaky"].attempts == 2


def test_request_and_os_errors_fail_in_one_line_without_retry(tmp_path):
    policy = {"ExceptionType": ["Step.SERVICE_FAULT", "SageMaker.JOB_INTERNAL_ERROR"], "MaxAttempts": 3}
    code = "import pathlib; p = pathlib.Path('/opt/ml/processing/out'); p.mkdir(exist_ok=True); (p / 'f').write_text('x')"
    step = processing("Long", code, outputs=["out"], RetryPolicies=[policy])
    # a valid S3 key whose first segment is longer than any file name may be on this machine
    step["Arguments"]["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] = (
        "s3://bucket/" + "y" * 300
    )
    record = run_definition(definition(step), home=tmp_path)
    rec = record.steps["Long"]
    assert record.status == "Failed"
    assert rec.attempts == 1
    assert "\n" not in rec.failure_reason and "Traceback" not in rec.failure_reason
    assert "File name too long" in rec.failure_reason, rec.failure_reason
    assert record.failure_reason.startswith("step Long failed: ")


# ----------------------------------------------------------------------------------- signal deaths named


@pytest.mark.parametrize("sandbox_mode", ["bwrap", "none"])
def test_a_job_killed_by_a_signal_says_so(tmp_path, monkeypatch, sandbox_mode):
    if sandbox_mode == "bwrap" and not HAS_BWRAP:
        pytest.skip("bwrap cannot create namespaces on this machine")
    monkeypatch.setenv("MLOPS_SANDBOX", sandbox_mode)
    code = "import os, signal; print('going', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    record = run_definition(definition(processing("Oom", code)), home=tmp_path)
    assert record.status == "Failed"
    assert "algo-1 was killed by SIGKILL (out of memory?)" in record.steps["Oom"].failure_reason


# ------------------------------------------------------------------------- executors that die, resumes

NAP = (
    "import pathlib as p, time; n = float(p.Path('/opt/ml/processing/input/nap/nap.txt').read_text());"
    "print('napping', n, flush=True); time.sleep(n); o = p.Path('/opt/ml/processing/out');"
    "o.mkdir(exist_ok=True); (o / 'd').write_text('ok')"
)


def _nap_definition(tmp_path: Path, marker: str, seconds: float) -> Path:
    S3Store(tmp_path / "s3").put_bytes("s3://bucket/nap/nap.txt", str(seconds).encode())
    d = definition(
        processing("First", "print('first')"),
        processing(
            "Nap", NAP, inputs=[("nap", "s3://bucket/nap/")], outputs=["out"], DependsOn=["First"],
            env={"MARKER": marker},
        ),
        processing("After", "print('after')", DependsOn=["Nap"]),
    )  # fmt: skip
    return _write(tmp_path, d)


def _start_napping(tmp_path: Path, marker: str) -> subprocess.Popen:
    path = _nap_definition(tmp_path, marker, 60)
    proc = _cli("run", "--definition", str(path), "--home", str(tmp_path))
    try:
        _wait_for(lambda: _log_says(tmp_path, "napping"), what="the Nap step to start")
    except BaseException:  # never leave a napping run behind for the next test to find
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        raise
    return proc


def test_sigkill_of_the_executor_fails_the_execution_and_resume_keeps_every_log(tmp_path):
    marker = f"mlops-nap-{os.getpid()}-kill"
    proc = _start_napping(tmp_path, marker)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    _no_process_left("/opt/ml/processing/input/nap/nap.txt")  # bwrap --die-with-parent / the watchdog

    home = Home.open(tmp_path)
    (row,) = home.runs.list()
    assert row["status"] == "Failed"
    assert row["failure_reason"] == f"the executor (pid {proc.pid}) ended without recording an outcome"
    steps = {s["name"]: s["status"] for s in home.runs.steps(row["id"])}
    assert steps == {"First": "Succeeded", "Nap": "Stopped", "After": "Stopped"}
    assert not [r for r in home.runs.list() if r["status"] == "Executing"]

    S3Store(tmp_path / "s3").put_bytes("s3://bucket/nap/nap.txt", b"0")
    resumed = _cli(
        "run", "--definition", str(tmp_path / "def.json"), "--home", str(tmp_path), "--resume", row["id"]
    )
    output = resumed.communicate(timeout=120)[0]
    assert resumed.returncode == 0, output
    record = home.runs.get(row["id"])
    assert record["status"] == "Succeeded" and record["attempts"] == 2
    nap_dir = tmp_path / "executions" / row["id"] / "Nap"
    assert sorted(p.name for p in nap_dir.iterdir()) == ["attempt-1", "attempt-2"]
    assert "napping 60" in (nap_dir / "attempt-1" / "algo-1.log").read_text()
    assert "napping 0" in (nap_dir / "attempt-2" / "algo-1.log").read_text()
    assert {s["name"]: s["attempts"] for s in home.runs.steps(row["id"])}["Nap"] == 2


def test_sighup_stops_every_job_and_records_stopped(tmp_path):
    marker = f"mlops-nap-{os.getpid()}-hup"
    proc = _start_napping(tmp_path, marker)
    proc.send_signal(signal.SIGHUP)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 130, output
    _no_process_left("/opt/ml/processing/input/nap/nap.txt")
    (row,) = Home.open(tmp_path).runs.list()
    assert row["status"] == "Stopped"
    assert statuses_of(tmp_path, row["id"])["Nap"] == "Stopped"


def statuses_of(tmp_path: Path, execution_id: str) -> dict[str, str]:
    return {s["name"]: s["status"] for s in Home.open(tmp_path).runs.steps(execution_id)}


def test_a_reused_pid_does_not_keep_an_execution_executing(tmp_path):
    home = Home.open(tmp_path)
    home.runs.create("e1", "p", definition(), {})
    with home.db() as con:  # this very process, but "started" at another time: a reused pid
        con.execute("UPDATE executions SET pid_started = pid_started + 1 WHERE id = 'e1'")
    assert home.runs.get("e1")["status"] == "Executing"  # this process is the executor: alive
    with home.db() as con:
        con.execute("UPDATE executions SET pid = 1 WHERE id = 'e1'")  # pid 1 lives, but started otherwise
    row = home.runs.get("e1")
    assert row["status"] == "Failed" and "the executor (pid 1) ended" in row["failure_reason"]


# --------------------------------------------------------------------------- resume keeps its parameters


def test_resume_refuses_new_parameters(tmp_path):
    d = definition(
        processing("Fail", "import sys; sys.exit('no')"),
        parameters=[{"Name": "Tag", "Type": "String", "DefaultValue": "a"}],
    )
    failed = run_definition(d, home=tmp_path)
    with pytest.raises(ParameterError, match="--param cannot be used with --resume"):
        run_definition(d, home=tmp_path, resume=failed.id, params={"Tag": "b"})
    proc = _cli(
        "run", "--definition", str(_write(tmp_path, d)), "--home", str(tmp_path), "--resume", failed.id,
        "--param", "Tag=b",
    )  # fmt: skip
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 2, output
    assert "--param" in output and "--resume" in output and "Traceback" not in output
    assert Home.open(tmp_path).runs.get(failed.id)["parameters"] == {"Tag": "a"}


# ------------------------------------------------------------------------ checkpoints synced while running

CKPT_JOB = (
    "import os, pathlib, time\n"
    "ckpt = pathlib.Path(os.environ['SM_CHECKPOINT_DIR'])\n"
    "done = sorted(int(p.stem.split('-')[1]) for p in ckpt.glob('epoch-*.txt'))\n"
    "start = done[-1] if done else 0\n"
    "print('resumed from epoch', start, flush=True) if start else None\n"
    "for epoch in range(start + 1, 4):\n"
    "    (ckpt / f'epoch-{epoch}.txt').write_text(str(epoch))\n"
    "    print(f'epoch={epoch}', flush=True)\n"
    "    time.sleep(float(os.environ['NAP']) if epoch == 2 and not start else 0.1)\n"
    "pathlib.Path(os.environ['SM_MODEL_DIR'], 'm.txt').write_text('ok')\n"
)


def _training_step(store: S3Store) -> dict:
    store.put_bytes("s3://bucket/code/train.py", CKPT_JOB.encode())
    return {
        "Name": "Train",
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {
                "TrainingImage": "img", "TrainingInputMode": "File", "ContainerEntrypoint": ["python3"],
                "ContainerArguments": ["/opt/ml/input/data/code/train.py"],
            },
            "InputDataConfig": [{
                "ChannelName": "code", "InputMode": "File",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/code"}},
            }],
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/models"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 300},
            "CheckpointConfig": {
                "S3Uri": {"Std:Join": {"On": "/", "Values": [
                    "s3://bucket/checkpoints", {"Get": "Execution.PipelineExecutionId"},
                ]}},
            },
            "Environment": {"NAP": {"Get": "Parameters.Nap"}},
            "RoleArn": ROLE,
        },
    }  # fmt: skip


def test_a_killed_training_resumes_from_its_synced_checkpoint_and_a_new_execution_starts_over(tmp_path):
    store = S3Store(tmp_path / "s3")
    nap = {"Name": "Nap", "Type": "String", "DefaultValue": "60"}
    path = _write(tmp_path, definition(_training_step(store), parameters=[nap]))
    env_before = os.environ.get("MLOPS_CHECKPOINT_SYNC_S")
    os.environ["MLOPS_CHECKPOINT_SYNC_S"] = "0.3"  # inherited by the executor subprocess
    try:
        proc = _cli("run", "--definition", str(path), "--home", str(tmp_path))
        home = Home.open(tmp_path)
        execution_id = _wait_for(lambda: (home.runs.list() or [{}])[0].get("id"), what="the execution")
        synced = f"s3://bucket/checkpoints/{execution_id}/epoch-2.txt"
        _wait_for(lambda: store.exists(synced), what="epoch 2's checkpoint to be synced while the job runs")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        _no_process_left("/opt/ml/input/data/code/train.py")

        resumed = _cli("run", "--definition", str(path), "--home", str(tmp_path), "--resume", execution_id)
        output = resumed.communicate(timeout=120)[0]
        assert resumed.returncode == 0, output
        log2 = (tmp_path / "executions" / execution_id / "Train" / "attempt-2" / "algo-1.log").read_text()
        assert "resumed from epoch 2" in log2 and "epoch=3" in log2 and "epoch=1" not in log2

        # a new execution (retraining) has checkpoints of its own: it trains from epoch 1
        fresh = run_definition(json.loads(path.read_text()), home=tmp_path, params={"Nap": "0"})
    finally:
        if env_before is None:
            os.environ.pop("MLOPS_CHECKPOINT_SYNC_S", None)
        else:
            os.environ["MLOPS_CHECKPOINT_SYNC_S"] = env_before
    assert fresh.id != execution_id
    log3 = Path(fresh.steps["Train"].log_paths[0]).read_text()
    assert "resumed from epoch" not in log3 and "epoch=1" in log3
