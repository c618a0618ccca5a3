"""The audit trail's hash chain: refused UPDATE/DELETE, `mlops models verify`, tampering found (no training)."""

from __future__ import annotations

import json
import sqlite3

import pytest

from mlops.cli.main import main
from mlops.local.state.home import Home
from mlops.local.state.registry import GENESIS, audit_hash
from mlops.registry import PENDING
from mlops.registry.local import LocalRegistry

GROUP = "digits-classifier"


def _register(home: Home) -> dict:
    return home.registry.register(
        GROUP,
        "arn:aws:sagemaker:eu-west-1:123456789012:model-package",
        approval_status=PENDING,
        model_data_url="s3://b/model.tar.gz",
        request={"ModelPackageGroupName": GROUP},
    )


@pytest.fixture
def trail(tmp_path) -> Home:
    """A home with two versions and five audit rows."""
    home = Home.open(tmp_path / "home")
    registry = LocalRegistry(home)
    _register(home)
    _register(home)
    registry.approve(f"{GROUP}/1", "accuracy ok", actor="alice")
    registry.approve(f"{GROUP}/1", "still ok", actor="bob")  # no change: an audit row all the same
    registry.reject(f"{GROUP}/2", "7s are poor", actor="carol")
    registry.approve(f"{GROUP}/2", "7s fixed", actor="dave", force=True)
    registry.reject(f"{GROUP}/2", "regression", actor="erin")
    return home


def verify(capsys, home: Home, *extra: str) -> tuple[int, str]:
    code = main(["models", "verify", "--home", str(home.root), *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def raw(home: Home) -> sqlite3.Connection:
    """What an attacker with the file has: the sqlite3 shell's view, no toolkit code."""
    return sqlite3.connect(home.db_path, isolation_level=None)


def test_every_row_chains_to_the_one_before(trail):
    with raw(trail) as con:
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT * FROM model_package_audit ORDER BY id").fetchall()
    assert [r["id"] for r in rows] == [1, 2, 3, 4, 5]
    prev = GENESIS
    for row in rows:
        assert row["prev_hash"] == prev
        assert row["row_hash"] == audit_hash(row, prev)
        prev = row["row_hash"]


def test_an_intact_trail_verifies(capsys, trail):
    code, out = verify(capsys, trail)
    assert code == 0, out
    assert "audit trail intact: 5 rows" in out
    code, out = verify(capsys, trail, "--format", "json")
    doc = json.loads(out)
    assert (code, doc["intact"], doc["rows"], doc["broken"]) == (0, True, 5, None)


def test_an_empty_trail_verifies(capsys, tmp_path):
    code, out = verify(capsys, Home.open(tmp_path / "empty"))
    assert (code, "audit trail intact: 0 rows" in out) == (0, True)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE model_package_audit SET reason = 'nothing to see' WHERE id = 3",
        "UPDATE model_package_audit SET row_hash = NULL",
        "DELETE FROM model_package_audit WHERE id = 5",
        "DELETE FROM model_package_audit",
    ],
)
def test_update_and_delete_through_sql_are_refused(trail, sql):
    with raw(trail) as con, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute(sql)
    assert LocalRegistry(trail).verify().intact


def _drop_triggers(con: sqlite3.Connection) -> None:
    con.execute("DROP TRIGGER model_package_audit_is_final")
    con.execute("DROP TRIGGER model_package_audit_is_kept")


@pytest.mark.parametrize(
    "tamper, broken_id, intact, what",
    [
        (
            "UPDATE model_package_audit SET actor = 'mallory' WHERE id = 3",
            3,
            2,
            "changed after it was written",
        ),
        (
            "UPDATE model_package_audit SET to_status = 'Approved' WHERE id = 5",
            5,
            4,
            "changed after it was written",
        ),
        ("DELETE FROM model_package_audit WHERE id = 2", 3, 1, "does not match row 1's hash"),
        ("DELETE FROM model_package_audit WHERE id = 1", 2, 0, "does not match the genesis value"),
        ("DELETE FROM model_package_audit WHERE id >= 4", 4, 3, "rows after id 3 are missing"),
        ("UPDATE model_package_audit SET row_hash = NULL WHERE id = 4", 4, 3, "row_hash is missing"),
    ],
    ids=["actor", "status", "delete-middle", "delete-first", "truncate", "no-hash"],
)
def test_a_tampered_trail_is_found(capsys, trail, tamper, broken_id, intact, what):
    with raw(trail) as con:
        _drop_triggers(con)
        con.execute(tamper)
    code, out = verify(capsys, trail)
    assert code == 1, out
    assert f"row id {broken_id}" in out and what in out, out
    check = LocalRegistry(trail).verify()
    assert (check.intact, check.broken["id"], check.rows) == (False, broken_id, intact)
    if broken_id in (3, 5):
        assert check.broken["group_name"] == GROUP and check.broken["version"] in (1, 2)


def test_a_row_forged_with_a_recomputed_hash_still_breaks_the_next_one(capsys, trail):
    with raw(trail) as con:
        con.row_factory = sqlite3.Row
        _drop_triggers(con)
        row = dict(con.execute("SELECT * FROM model_package_audit WHERE id = 3").fetchone())
        row["reason"] = "looked fine to me"
        con.execute(
            "UPDATE model_package_audit SET reason = ?, row_hash = ? WHERE id = 3",
            (row["reason"], audit_hash(row, row["prev_hash"])),
        )
    code, out = verify(capsys, trail)
    assert code == 1 and "row id 4" in out and f"{GROUP}/2" in out and "does not match row 3's hash" in out


def test_new_rows_after_a_reopen_continue_the_chain(trail):
    again = Home.open(trail.root)  # the schema and the migration run again: both are idempotent
    LocalRegistry(again).approve(f"{GROUP}/2", "fixed again", actor="frank", force=True)
    check = LocalRegistry(again).verify()
    assert (check.intact, check.rows) == (True, 6)
