"""Every value a training job's metric regexes capture, per host and epoch, as CloudWatch keeps them: the
home's ``metric_history``, its summary, and ``mlops executions show`` at 80 columns."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import struct
import subprocess
import sys
import termios
import textwrap
from datetime import datetime

import pytest

from mlops.cli.main import main
from mlops.local.runtime import sandbox
from mlops.local.runtime.common import MetricParser, read_metric_history
from mlops.local.s3store import S3Store
from mlops.local.scheduler import run_definition
from mlops.local.state.home import SCHEMA, Home
from steps.train.metrics import METRIC_DEFINITIONS
from tests.local.test_training_job import request
from tests.project import ROOT

EPOCHS = 3
# Two hosts in one gloo process group (real torch.distributed over algo-1's port): each epoch the ranks
# all-reduce their losses and each prints the project's metric line (steps/train/code/train.py's format)
# plus a loss of its own, so each host's history differs from the other's.
DDP_EPOCHS = textwrap.dedent(
    f"""
    import json, os, time
    import torch, torch.distributed as dist
    hosts = json.loads(os.environ["SM_HOSTS"])
    rank = hosts.index(os.environ["SM_CURRENT_HOST"])
    dist.init_process_group("gloo", init_method="tcp://algo-1:29511", rank=rank, world_size=len(hosts))
    for epoch in range(1, {EPOCHS} + 1):
        local = (rank + 1) / epoch
        total = torch.tensor([local])
        dist.all_reduce(total)
        mean = total.item() / len(hosts)
        print(f"epoch={{epoch}} train_loss={{mean:.4f}} validation_loss={{mean + 0.5:.4f}} "
              f"validation_accuracy={{0.5 + 0.1 * epoch:.4f}} local_loss={{local:.4f}}", flush=True)
        time.sleep(0.05)
    dist.barrier()
    dist.destroy_process_group()
    """
)
LOCAL_LOSS = {"Name": "local:loss", "Regex": r"local_loss=([0-9.]+)"}


def train_step(store: S3Store, script: str, count: int = 2) -> dict:
    req = request(store, script, count=count, metrics=[*METRIC_DEFINITIONS, LOCAL_LOSS])
    return {"Name": "Train", "Type": "Training", "Arguments": req}


def definition(*steps) -> dict:
    return {"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": list(steps)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real two-host DDP training run through the executor: ``(home, execution record)``."""
    if not sandbox.bwrap_works():
        pytest.skip("bwrap cannot create namespaces on this machine (algo-1 must resolve)")
    root = tmp_path_factory.mktemp("trained")
    home = Home.open(root / "home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_SANDBOX", "bwrap")
        record = run_definition(definition(train_step(S3Store(home.s3_root), DDP_EPOCHS)), home=home)
    assert record.status == "Succeeded", (record.failure_reason, record.steps["Train"].failure_reason)
    return home, record


def test_every_epoch_of_both_hosts_is_kept_in_order(trained):
    home, record = trained
    rows = home.runs.metric_history(record.id, step="Train")
    by = {}
    for r in rows:
        by.setdefault((r["name"], r["host"]), []).append(r)
    names = {"train:loss", "validation:loss", "validation:accuracy", "local:loss"}
    assert set(by) == {(n, h) for n in names for h in ("algo-1", "algo-2")}
    for (name, host), points in by.items():
        assert [p["seq"] for p in points] == list(range(EPOCHS)), (name, host)
        assert [p["epoch"] for p in points] == [1, 2, 3], (name, host)
        stamps = [datetime.fromisoformat(p["timestamp"]) for p in points]
        assert stamps == sorted(stamps) and stamps[0] >= datetime.fromisoformat(record.started_at)
    local = {h: [p["value"] for p in by[("local:loss", h)]] for h in ("algo-1", "algo-2")}
    assert local == {"algo-1": [1.0, 0.5, 0.3333], "algo-2": [2.0, 1.0, 0.6667]}
    assert [p["value"] for p in by[("train:loss", "algo-2")]] == [1.5, 0.75, 0.5]
    assert [p["value"] for p in by[("validation:accuracy", "algo-1")]] == [0.6, 0.7, 0.8]
    assert home.runs.metric_history(record.id, name="local:loss") == [
        r for r in rows if r["name"] == "local:loss"
    ]


def test_the_last_value_of_each_name_keeps_its_meaning(trained):
    home, record = trained
    with sqlite3.connect(home.db_path) as con:
        kept = dict(
            con.execute(
                "SELECT name, value FROM metrics WHERE execution_id = ? AND step = 'Train'", (record.id,)
            ).fetchall()
        )
    final = {m["MetricName"]: m["Value"] for m in record.steps["Train"].properties["FinalMetricDataList"]}
    assert kept == final == record.steps["Train"].metrics
    assert kept["train:loss"] == 0.5 and kept["validation:accuracy"] == 0.8
    # local:loss: the value read last, whichever host printed it (the hosts' last lines race)
    summary = {s["name"]: s for s in home.runs.metric_summary(record.id)}
    assert {n: s["last"] for n, s in summary.items()} == kept
    assert kept["local:loss"] in (0.3333, 0.6667)
    loss, acc = summary["local:loss"], summary["validation:accuracy"]
    assert (loss["direction"], loss["best"], loss["best_host"], loss["best_epoch"]) == (
        "min",
        0.3333,
        "algo-1",
        3,
    )
    assert (acc["direction"], acc["best"], acc["best_seq"], acc["best_epoch"]) == ("max", 0.8, 2, 3)
    assert loss["points"] == 2 * EPOCHS and loss["hosts"] == ["algo-1", "algo-2"]


def _in_a_terminal(args: list[str], columns: int) -> str:
    """What ``mlops ARGS`` prints to a terminal ``columns`` wide (a pty), without escape sequences and
    trailing blanks."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.cli", *args], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=follower,
        stderr=subprocess.PIPE, env={**env, "NO_COLOR": "1", "TERM": "xterm"},
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the follower side closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode())
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").splitlines())


def test_executions_show_latest_prints_the_metric_table_at_80_columns(trained):
    home, record = trained
    text = _in_a_terminal(["executions", "show", "latest", "--home", str(home.root)], 80)
    lines = text.splitlines()
    assert lines[0].startswith(f"execution {record.id}  pipeline")
    logs = [line for line in lines if line.endswith(".log")]  # whole paths, one a line, to copy
    assert [line.split()[-1] for line in logs] == record.steps["Train"].log_paths
    assert max(len(line) for line in lines if line not in logs) <= 80
    assert re.search(r"^Train +Training +Succeeded +\d\d:\d\d:\d\d +\d+\.\ds +1 +see below", text, re.M), text
    start = lines.index("metrics: Train")
    assert lines[start + 1].split() == ["metric", "last", "best", "best", "at", "points", "hosts"]
    rows = {line.split()[0]: line for line in lines[start + 3 : start + 7]}
    assert set(rows) == {"local:loss", "train:loss", "validation:accuracy", "validation:loss"}, text
    assert re.fullmatch(
        r"validation:accuracy +0\.8 +0\.8 ↑ +epoch 3 algo-[12] +6 +algo-1,2", rows["validation:accuracy"]
    )
    assert re.fullmatch(
        r"local:loss +0\.(3333|6667) +0\.3333 ↓ +epoch 3 algo-1 +6 +algo-1,2", rows["local:loss"]
    )
    by_prefix = _in_a_terminal(["executions", "show", record.id[:5], "--home", str(home.root)], 80)
    assert by_prefix.splitlines()[0] == lines[0]


def test_a_home_from_before_metric_history_still_opens_and_keeps_its_data(tmp_path):
    old_schema = re.sub(r"CREATE TABLE IF NOT EXISTS metric_history \(.*?\);", "", SCHEMA, flags=re.S)
    assert "CREATE TABLE IF NOT EXISTS metric_history" not in old_schema and "metric_history (" in SCHEMA
    old_schema = old_schema.replace("    pid INTEGER,\n    attempts INTEGER NOT NULL DEFAULT 1,\n    pid_started INTEGER\n",
                                    "    pid INTEGER,\n    attempts INTEGER NOT NULL DEFAULT 1\n")  # fmt: skip
    con = sqlite3.connect(tmp_path / "mlops.db")
    con.executescript(old_schema)
    con.execute(
        "INSERT INTO executions (id, pipeline_name, status, definition, parameters, started_at)"
        " VALUES ('old000000000', 'p', 'Succeeded', '{}', '{}', '2026-01-01T00:00:00+00:00')"
    )
    con.execute("INSERT INTO metrics VALUES ('old000000000', 'Train', 'validation:loss', 0.25)")
    con.commit()
    con.close()
    home = Home.open(tmp_path)
    assert home.runs.resolve("latest") == "old000000000"
    assert home.runs.metric_history("old000000000") == [] and home.runs.metric_summary("old000000000") == []
    home.runs.upsert_step("old000000000", "Train", type="Training", status="Succeeded", metrics={"a": 1.0})
    assert home.runs.get("old0")["pid_started"] is None
    show = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "executions", "show", "latest", "--home", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert show.returncode == 0 and "execution old000000000" in show.stdout and "metrics:" not in show.stdout


@pytest.mark.parametrize(
    "line, definitions, epoch",
    [
        (
            "epoch=3 train_loss=0.1234 validation_loss=0.2345 validation_accuracy=0.9612",
            METRIC_DEFINITIONS,
            3,
        ),
        ("Epoch 4/20 - loss: 0.5", [{"Name": "loss", "Regex": r"loss: ([0-9.]+)"}], 4),
        (
            "[12] loss=0.5",
            [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}, {"Name": "epoch", "Regex": r"\[(\d+)\]"}],
            12,
        ),
        ("step 7 loss=0.5", [{"Name": "loss", "Regex": r"loss=([0-9.]+)"}], None),
    ],
)
def test_a_points_epoch_is_a_metric_named_epoch_else_the_lines_epoch_n(tmp_path, line, definitions, epoch):
    parser = MetricParser(definitions)
    parser.record_to(tmp_path / "metric-history.jsonl")
    parser.feed(line, "algo-2")
    parser.feed("no metric here", "algo-2")
    parser.close()
    points = read_metric_history(tmp_path)
    assert points and {p["epoch"] for p in points} == {epoch} and {p["host"] for p in points} == {"algo-2"}
    assert [p["name"] for p in points] == [d["Name"] for d in definitions]
    assert parser.values == {p["name"]: p["value"] for p in points}


FAILS_AFTER_TWO_EPOCHS = textwrap.dedent(
    """
    import sys
    for epoch in (1, 2):
        print(f"epoch={epoch} train_loss={1 / epoch:.4f} validation_accuracy=nan", flush=True)
    sys.exit("diverged")
    """
)


def test_a_failed_job_keeps_the_history_it_printed_and_a_cache_hit_gets_its_runs(tmp_path, mode, capsys):
    home = Home.open(tmp_path / "home")
    failed = run_definition(
        definition(train_step(S3Store(home.s3_root), FAILS_AFTER_TWO_EPOCHS, count=1)), home=home
    )
    assert failed.status == "Failed" and "diverged" in failed.steps["Train"].failure_reason
    points = home.runs.metric_history(failed.id)
    assert [(p["name"], p["epoch"], p["value"]) for p in points] == [
        ("train:loss", 1, 1.0), ("validation:accuracy", 1, None),
        ("train:loss", 2, 0.5), ("validation:accuracy", 2, None),
    ]  # fmt: skip
    (loss, acc) = home.runs.metric_summary(failed.id)
    assert (loss["name"], loss["last"], loss["best"], loss["best_epoch"]) == ("train:loss", 0.5, 0.5, 2)
    assert (acc["last"], acc["best"], acc["points"]) == (None, None, 2)  # NaN is no value, not an error

    script = "for e in (1, 2, 3):\n    print(f'epoch={e} train_loss={1 / e:.4f}', flush=True)\n"
    step = train_step(S3Store(home.s3_root), script, count=1)
    step["CacheConfig"] = {"Enabled": True, "ExpireAfter": "PT1H"}
    first = run_definition(definition(step), home=home)
    again = run_definition(definition(step), home=home)
    assert again.steps["Train"].cache_hit and again.status == "Succeeded", again.failure_reason

    def curve(execution_id):
        return [(p["host"], p["seq"], p["epoch"], p["value"]) for p in home.runs.metric_history(execution_id)]

    assert (
        curve(again.id) == curve(first.id) == [("algo-1", i, i + 1, round(1 / (i + 1), 4)) for i in range(3)]
    )
    capsys.readouterr()
    assert main(["executions", "show", again.id[:8], "--home", str(home.root), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(s["step"], s["name"], s["last"], s["points"]) for s in shown["metric_summary"]] == [
        ("Train", "train:loss", 0.3333, 3)
    ]
