"""The local model registry: groups, versions, approval status, the audit trail, created models.

The audit trail (``model_package_audit``) is append-only (SQLite triggers refuse UPDATE and DELETE) and
tamper-evident: every row carries ``row_hash``, the SHA-256 of a canonical encoding of its fields and of
``prev_hash``, the previous row's ``row_hash`` (``GENESIS`` for the first row). The hash is computed and the
row inserted in one write transaction, so the chain has one order across processes. ``verify_audit`` walks
the chain: a row edited, inserted or removed behind the triggers' back (after dropping them, with the
``sqlite3`` shell) no longer matches. Without a secret key this detects tampering by anyone who does not
also recompute every later hash; the head hash ``mlops models verify`` prints can be kept elsewhere to
catch that too.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from mlops.errors import MlopsError
from mlops.local.state.home import JSON_COLUMNS, Home, _row, now

GENESIS = "0" * 64  # what the first audit row chains to
AUDIT_FIELDS = (
    "id",
    "group_name",
    "version",
    "arn",
    "at",
    "actor",
    "action",
    "from_status",
    "to_status",
    "reason",
)
_NO_UPDATE_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS model_package_audit_is_final BEFORE UPDATE ON model_package_audit"
    " BEGIN SELECT RAISE(ABORT, 'the model package audit trail is append-only'); END"
)


def audit_hash(fields: dict[str, Any] | sqlite3.Row, prev_hash: str | None) -> str:
    """SHA-256 (hex) over the row's fields in ``AUDIT_FIELDS`` order plus ``prev_hash``, as compact JSON."""
    values = [fields[name] for name in AUDIT_FIELDS]
    payload = json.dumps([*values, prev_hash], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _append_audit(con, **fields: Any) -> None:
    """Insert one audit row chained to the last one; ``con`` is inside a write (IMMEDIATE) transaction."""
    last = con.execute("SELECT id, row_hash FROM model_package_audit ORDER BY id DESC LIMIT 1").fetchone()
    seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'model_package_audit'").fetchone()
    row = {"id": max(last[0] if last else 0, seq[0] if seq else 0) + 1, **fields}
    prev = last[1] if last else GENESIS
    row.update(prev_hash=prev, row_hash=audit_hash(row, prev))
    con.execute(
        f"INSERT INTO model_package_audit ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        tuple(row.values()),
    )


# Columns ``model_packages`` gained after homes existed: added (NULL for old rows) when a home is opened.
# ``provenance`` is what the run recorded at registration that SageMaker's CreateModelPackage request
# does not carry: the model artifact's digest and the training job's input channels with their content
# digests and hyperparameters (see ``mlops.local.handlers.register_model``).
PACKAGE_COLUMNS = (("provenance", "TEXT"),)
_PACKAGE_JSON = frozenset(name for name, _ in PACKAGE_COLUMNS)


def migrate_packages(con: sqlite3.Connection) -> None:
    """Add the ``PACKAGE_COLUMNS`` an older home's ``model_packages`` lacks (guarded by PRAGMA table_info)."""
    have = {r[1] for r in con.execute("PRAGMA table_info(model_packages)")}
    for name, kind in PACKAGE_COLUMNS:
        if name not in have:
            con.execute(f"ALTER TABLE model_packages ADD COLUMN {name} {kind}")
    con.commit()


def _package(row: sqlite3.Row | None) -> dict[str, Any] | None:
    out = _row(row)
    for name in _PACKAGE_JSON & (out or {}).keys():
        if out[name] is not None:
            out[name] = json.loads(out[name])
    return out


def migrate_audit(con: sqlite3.Connection) -> None:
    """Bring an older home's registry tables up to date (``Home.open`` calls it once per open).

    ``model_packages`` gets its newer columns; the audit table gets the hash columns and its rows are sealed
    into the chain (once).
    """
    migrate_packages(con)
    columns = {r[1] for r in con.execute("PRAGMA table_info(model_package_audit)")}
    if {"prev_hash", "row_hash"} <= columns:
        return
    con.execute("BEGIN IMMEDIATE")
    try:
        columns = {r[1] for r in con.execute("PRAGMA table_info(model_package_audit)")}
        for name in ("prev_hash", "row_hash"):
            if name not in columns:
                con.execute(f"ALTER TABLE model_package_audit ADD COLUMN {name} TEXT")
        con.execute("DROP TRIGGER IF EXISTS model_package_audit_is_final")  # the backfill is an UPDATE
        prev = GENESIS
        rows = con.execute(
            f"SELECT {', '.join(AUDIT_FIELDS)} FROM model_package_audit ORDER BY id"
        ).fetchall()
        for values in rows:
            fields = dict(zip(AUDIT_FIELDS, values, strict=True))
            digest = audit_hash(fields, prev)
            con.execute(
                "UPDATE model_package_audit SET prev_hash = ?, row_hash = ? WHERE id = ?",
                (prev, digest, fields["id"]),
            )
            prev = digest
        con.execute(_NO_UPDATE_TRIGGER)
    except BaseException:
        con.rollback()
        raise
    con.commit()


def _mismatch(row: sqlite3.Row, expected: str, before: str) -> str | None:
    """What is wrong with one audit row given the hash it must chain to; None when it matches."""
    if not row["row_hash"]:
        return "row_hash is missing (the row was written outside the chain)"
    if row["prev_hash"] != expected:
        return (
            f"prev_hash {str(row['prev_hash'])[:12]}… does not match {before} {expected[:12]}… "
            "(a row before it was removed, inserted or rewritten)"
        )
    digest = audit_hash(row, row["prev_hash"])
    if digest != row["row_hash"]:
        return (
            f"its fields hash to {digest[:12]}…, not to its row_hash {row['row_hash'][:12]}… "
            "(the row was changed after it was written)"
        )
    return None


@dataclass
class AuditCheck:
    """The outcome of walking the audit chain: ``broken`` is None when every row matches."""

    rows: int
    head: str
    broken: dict[str, Any] | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None


class ModelRegistry:
    def __init__(self, home: Home):
        self.home = home
        self.root = home.root

    def db(self, immediate: bool = True):
        return self.home.db(immediate)

    def register(self, group: str, arn_prefix: str, **fields: Any) -> dict[str, Any]:
        """Create the group if needed and add the next version; the version number is taken atomically."""
        with self.db(immediate=True) as con:
            con.execute(
                "INSERT INTO model_package_groups (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (group, now()),
            )
            (last,) = con.execute(
                "SELECT COALESCE(MAX(version), 0) FROM model_packages WHERE group_name = ?", (group,)
            ).fetchone()
            version = last + 1
            arn = f"{arn_prefix}/{group}/{version}"
            row = {"group_name": group, "version": version, "arn": arn, "created_at": now(), **fields}
            json_columns = JSON_COLUMNS | _PACKAGE_JSON | {"metrics"}
            stored = {k: (json.dumps(v) if k in json_columns else v) for k, v in row.items()}
            con.execute(
                f"INSERT INTO model_packages ({', '.join(stored)}) VALUES ({', '.join('?' * len(stored))})",
                tuple(stored.values()),
            )
        return row

    def list(self, group: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM model_packages WHERE 1=1", []
        if group:
            sql, args = sql + " AND group_name = ?", [*args, group]
        if status:
            sql, args = sql + " AND approval_status = ?", [*args, status]
        with self.db() as con:
            rows = con.execute(sql + " ORDER BY group_name, version", args).fetchall()
        return [_package(r) for r in rows]

    def get(self, group: str, version: int) -> dict[str, Any] | None:
        with self.db() as con:
            row = con.execute(
                "SELECT * FROM model_packages WHERE group_name = ? AND version = ?", (group, version)
            ).fetchone()
        return _package(row)

    def set_approval_status(
        self, group: str, version: int, status: str, *, expected: str, actor: str, reason: str, action: str
    ) -> dict[str, Any]:
        """Change a version's status and append the audit row in one transaction.

        ``expected`` is the status the caller decided on; a concurrent change in between is refused rather
        than silently overwritten.
        """
        with self.db(immediate=True) as con:
            row = _package(
                con.execute(
                    "SELECT * FROM model_packages WHERE group_name = ? AND version = ?", (group, version)
                ).fetchone()
            )
            if row is None:
                raise MlopsError(f"model package {group}/{version}: not in the local registry {self.root}")
            if row["approval_status"] != expected:
                raise MlopsError(
                    f"model package {group}/{version}: status changed to {row['approval_status']} meanwhile;"
                    " look again with 'mlops models show'"
                )
            con.execute(
                "UPDATE model_packages SET approval_status = ? WHERE group_name = ? AND version = ?",
                (status, group, version),
            )
            _append_audit(
                con, group_name=group, version=version, arn=row["arn"], at=now(), actor=actor, action=action,
                from_status=expected, to_status=status, reason=reason,
            )  # fmt: skip
        row["approval_status"] = status
        return row

    def add_audit(self, package: dict[str, Any], *, actor: str, action: str, reason: str) -> None:
        """An audit row that changes no status (e.g. a repeated approval, a deployment outcome)."""
        status = package["approval_status"]
        with self.db(immediate=True) as con:
            _append_audit(
                con, group_name=package["group_name"], version=package["version"], arn=package["arn"], at=now(),
                actor=actor, action=action, from_status=status, to_status=status, reason=reason,
            )  # fmt: skip

    def verify_audit(self) -> AuditCheck:
        """Walk the whole chain in id order; the first row that does not match is ``broken``."""
        with self.db(immediate=False) as con:
            rows = con.execute("SELECT * FROM model_package_audit ORDER BY id").fetchall()
            seq = con.execute("SELECT seq FROM sqlite_sequence WHERE name = 'model_package_audit'").fetchone()
        expected, last_id = GENESIS, 0
        for count, row in enumerate(rows):
            what = _mismatch(row, expected, "the genesis value" if count == 0 else f"row {last_id}'s hash")
            if what:
                where = {k: row[k] for k in ("id", "group_name", "version", "action", "at")}
                return AuditCheck(count, expected, {**where, "what": what})
            expected, last_id = row["row_hash"], row["id"]
        if seq is not None and seq[0] > last_id:
            return AuditCheck(len(rows), expected, {
                "id": last_id + 1, "group_name": None, "version": None, "action": None, "at": None,
                "what": f"rows after id {last_id} are missing: the id sequence is at {seq[0]}",
            })  # fmt: skip
        return AuditCheck(len(rows), expected)

    def audit_trail(self, group: str, version: int) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute(
                "SELECT at, actor, action, from_status, to_status, reason FROM model_package_audit"
                " WHERE group_name = ? AND version = ? ORDER BY id",
                (group, version),
            ).fetchall()
        return [dict(r) for r in rows]

    def record_model(self, name: str, arn: str, execution_id: str, step: str, request: dict) -> None:
        with self.db() as con:
            con.execute(
                "INSERT OR REPLACE INTO models (name, arn, execution_id, step, request, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, arn, execution_id, step, json.dumps(request), now()),
            )

    def models(self) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute("SELECT * FROM models ORDER BY created_at").fetchall()
        return [_row(r) for r in rows]
