"""The local home: where it lives, its SQLite records and the model registry under concurrency."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops.errors import MlopsError
from mlops.local.state.home import Home, atomic_write, resolve_home
from tests.project import ROOT as PROJECT_ROOT


def test_home_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOPS_HOME", raising=False)
    default = PROJECT_ROOT / ".mlops"
    assert resolve_home(None, default) == default.resolve()
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "env"))
    assert resolve_home(None, default) == tmp_path / "env"
    assert resolve_home(tmp_path / "flag", default) == tmp_path / "flag"
    monkeypatch.delenv("MLOPS_HOME")
    with pytest.raises(MlopsError, match="no local home"):
        resolve_home(None, None)


def test_open_creates_layout_in_wal_mode(tmp_path):
    home = Home.open(tmp_path / "h")
    assert (home.root / "s3").is_dir() and (home.root / "executions").is_dir()
    with home.db() as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_unwritable_home_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(MlopsError, match="cannot create the local home"):
        Home.open(blocker / "home")


def test_execution_and_step_records_round_trip(tmp_path):
    home = Home.open(tmp_path)
    home.runs.create("exec1", "demo", {"Steps": []}, {"P": 1})
    home.runs.upsert_step(
        "exec1", "Train", type="Training", status="Executing", started_at="2026-01-01T00:00:00"
    )
    home.runs.upsert_step("exec1", "Train", status="Succeeded", metrics={"loss": 0.5}, properties={"A": [1]})
    home.runs.finish("exec1", "Succeeded", None)
    (row,) = home.runs.list()
    assert (row["id"], row["status"], row["pipeline_name"]) == ("exec1", "Succeeded", "demo")
    (step,) = home.runs.steps("exec1")
    assert (step["type"], step["status"], step["metrics"], step["properties"]) == (
        "Training",
        "Succeeded",
        {"loss": 0.5},
        {"A": [1]},
    )
    assert home.runs.get("exe")["id"] == "exec1"  # unique prefixes are accepted like git's


def test_resume_claim_refuses_succeeded_and_unknown(tmp_path):
    home = Home.open(tmp_path)
    home.runs.create("done1", "demo", {}, {})
    home.runs.finish("done1", "Succeeded", None)
    with pytest.raises(MlopsError, match="already succeeded"):
        home.runs.claim("done1", {}, {})
    with pytest.raises(MlopsError, match="no execution nope"):
        home.runs.claim("nope", {}, {})


REGISTER = """
import sys
from mlops.local.state.home import Home
home = Home.open(sys.argv[1])
for _ in range(10):
    home.registry.register("digits", "arn:aws:sagemaker:r:1:model-package", approval_status="PendingManualApproval",
                                metrics={}, request={})
"""


def test_two_processes_registering_get_distinct_versions(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", REGISTER, str(tmp_path)], env=env) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    rows = Home.open(tmp_path).registry.list(group="digits")
    assert [r["version"] for r in rows] == list(range(1, 21))
    assert rows[-1]["arn"] == "arn:aws:sagemaker:r:1:model-package/digits/20"


def test_model_package_filters(tmp_path):
    home = Home.open(tmp_path)
    home.registry.register("a", "p", approval_status="Approved", metrics={"m": 1}, request={})
    home.registry.register("b", "p", approval_status="PendingManualApproval", metrics={}, request={})
    assert [r["group_name"] for r in home.registry.list(status="Approved")] == ["a"]
    assert [r["approval_status"] for r in home.registry.list(group="b")] == ["PendingManualApproval"]
    assert home.registry.list(group="a")[0]["metrics"] == {"m": 1}


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "d" / "f.json"
    atomic_write(target, "{}")
    atomic_write(target, b"[1]")
    assert target.read_text() == "[1]"
    assert sorted(p.name for p in Path(target.parent).iterdir()) == ["f.json"]


OLD_AUDIT_SCHEMA = """
CREATE TABLE model_package_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, group_name TEXT NOT NULL, version INTEGER NOT NULL, arn TEXT NOT NULL,
    at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, from_status TEXT, to_status TEXT, reason TEXT
);
CREATE TRIGGER model_package_audit_is_kept BEFORE DELETE ON model_package_audit
BEGIN SELECT RAISE(ABORT, 'the model package audit trail is append-only'); END;
INSERT INTO model_package_audit (group_name, version, arn, at, actor, action, from_status, to_status, reason)
VALUES ('g', 1, 'arn:g/1', '2026-01-01T00:00:00', 'ann', 'approve', 'PendingManualApproval', 'Approved', 'ok'),
       ('g', 1, 'arn:g/1', '2026-01-02T00:00:00', 'ben', 'reject', 'Approved', 'Rejected', 'regressed');
"""


def test_an_older_home_gets_the_audit_chain_and_the_update_trigger(tmp_path):
    import sqlite3

    tmp_path.mkdir(exist_ok=True)
    with sqlite3.connect(tmp_path / "mlops.db") as con:
        con.executescript(OLD_AUDIT_SCHEMA)
    home = Home.open(tmp_path)
    check = home.registry.verify_audit()
    assert (check.intact, check.rows) == (True, 2)  # the old rows are sealed into the chain as they were
    with sqlite3.connect(home.db_path) as con, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE model_package_audit SET reason = 'x'")
    row = {"group_name": "g", "version": 1, "arn": "arn:g/1", "approval_status": "Rejected"}
    home.registry.add_audit(row, actor="cy", action="reject (no change)", reason="still bad")
    assert [a["actor"] for a in home.registry.audit_trail("g", 1)] == ["ann", "ben", "cy"]
    assert Home.open(tmp_path).registry.verify_audit().rows == 3  # a second open migrates nothing
