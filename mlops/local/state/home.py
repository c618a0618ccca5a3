"""The local home: ``s3/`` (the file-backed store), ``mlops.db`` (SQLite) and ``executions/`` job dirs.

SQLite runs in WAL mode with a busy timeout so that two ``mlops run`` processes can share one home; every
write is one short transaction on a fresh connection, which keeps threads and processes out of each
other's way without a global lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops._root import PROJECT_ROOT
from mlops.errors import MlopsError

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    pipeline_name TEXT NOT NULL,
    status TEXT NOT NULL,
    definition TEXT NOT NULL,
    parameters TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    failure_reason TEXT,
    pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS steps (
    execution_id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    duration_s REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    failure_reason TEXT,
    properties TEXT,
    metrics TEXT,
    log_paths TEXT,
    cache_key TEXT,
    cache_hit INTEGER NOT NULL DEFAULT 0,
    job_dir TEXT,
    PRIMARY KEY (execution_id, name)
);
CREATE INDEX IF NOT EXISTS steps_cache ON steps (cache_key, status);
CREATE TABLE IF NOT EXISTS metrics (
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (execution_id, step, name)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    execution_id TEXT NOT NULL,
    at TEXT NOT NULL,
    step TEXT,
    kind TEXT NOT NULL,
    message TEXT
);
CREATE TABLE IF NOT EXISTS model_package_groups (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS model_packages (
    group_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    arn TEXT NOT NULL,
    approval_status TEXT NOT NULL,
    model_data_url TEXT,
    image TEXT,
    content_types TEXT,
    response_types TEXT,
    inference_instances TEXT,
    transform_instances TEXT,
    metrics TEXT,
    execution_id TEXT,
    step TEXT,
    description TEXT,
    request TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (group_name, version)
);
CREATE TABLE IF NOT EXISTS model_package_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    group_name TEXT NOT NULL,
    version INTEGER NOT NULL,
    arn TEXT NOT NULL,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    from_status TEXT,
    to_status TEXT,
    reason TEXT
);
CREATE TRIGGER IF NOT EXISTS model_package_audit_is_kept BEFORE DELETE ON model_package_audit
BEGIN SELECT RAISE(ABORT, 'the model package audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS bus_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    source TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    resource TEXT,
    event TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY,
    package_arn TEXT NOT NULL,
    target_stage TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    endpoints TEXT,
    steps TEXT
);
CREATE TABLE IF NOT EXISTS models (
    name TEXT PRIMARY KEY,
    arn TEXT NOT NULL,
    execution_id TEXT,
    step TEXT,
    request TEXT NOT NULL,
    created_at TEXT NOT NULL
);
"""

JSON_COLUMNS = {
    "properties",
    "metrics",
    "log_paths",
    "parameters",
    "content_types",
    "response_types",
    "inference_instances",
    "transform_instances",
    "request",
    "event",
    "endpoints",
}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def resolve_home(home: str | Path | None = None) -> Path:
    """``--home`` beats ``MLOPS_HOME`` beats ``<project root>/.mlops``."""
    if home:
        return Path(home).expanduser().resolve()
    if os.environ.get("MLOPS_HOME"):
        return Path(os.environ["MLOPS_HOME"]).expanduser().resolve()
    return (PROJECT_ROOT / ".mlops").resolve()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write via a temp file in the same directory + rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    for key in JSON_COLUMNS & out.keys():
        if out[key] is not None:
            out[key] = json.loads(out[key])
    return out


@dataclass(frozen=True)
class Home:
    """One local home directory; cheap to construct, every method opens its own short connection."""

    root: Path

    @classmethod
    def open(cls, home: str | Path | None = None) -> Home:
        root = resolve_home(home)
        try:
            (root / "s3").mkdir(parents=True, exist_ok=True)
            (root / "executions").mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MlopsError(f"cannot create the local home {root}: {err.strerror}") from err
        self = cls(root)
        # Switching to WAL takes an exclusive lock that SQLite does not wait for: processes opening the same
        # home at once take turns on a file lock instead.
        with open(root / ".init.lock", "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                con = sqlite3.connect(self.db_path, timeout=30)
                try:
                    con.execute("PRAGMA busy_timeout=30000")
                    con.execute("PRAGMA journal_mode=WAL")  # persistent: set once per database file
                    con.executescript(SCHEMA)
                finally:
                    con.close()
            except sqlite3.Error as err:
                raise MlopsError(f"local database {self.db_path}: {err}") from err
        return self

    @property
    def s3_root(self) -> Path:
        return self.root / "s3"

    @property
    def db_path(self) -> Path:
        return self.root / "mlops.db"

    def execution_dir(self, execution_id: str) -> Path:
        return self.root / "executions" / execution_id

    @contextmanager
    def db(self, immediate: bool = True):
        """One transaction on this process's shared connection to the home's database.

        Immediate by default: in WAL mode a deferred transaction that reads and then writes cannot wait for
        another process's writer (SQLite answers "database is locked" at once instead of using the busy
        timeout), so every transaction takes the write lock up front; they are all short.

        The connection stays open for the life of the process: closing the last connection of a WAL
        database checkpoints it, which costs a sync on every short transaction. Threads take turns on a lock;
        other processes wait on SQLite's busy timeout.
        """
        con, lock = _connection(self.db_path)
        with lock:
            try:
                con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            except sqlite3.Error as err:
                raise MlopsError(f"local database {self.db_path}: {err}") from err

    # ------------------------------------------------------------------------------------ executions

    def create_execution(self, execution_id: str, pipeline_name: str, definition: dict, params: dict) -> None:
        with self.db() as con:
            con.execute(
                "INSERT INTO executions (id, pipeline_name, status, definition, parameters, started_at, pid)"
                " VALUES (?, ?, 'Executing', ?, ?, ?, ?)",
                (execution_id, pipeline_name, json.dumps(definition), json.dumps(params), now(), os.getpid()),
            )

    def claim_execution(self, execution_id: str, definition: dict, params: dict) -> dict[str, Any]:
        """Mark a recorded execution Executing again for a resume; refuse one that a live process runs."""
        with self.db(immediate=True) as con:
            row = _row(con.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone())
            if row is None:
                raise MlopsError(f"no execution {execution_id} in {self.root}")
            if row["status"] == "Executing" and row["pid"] != os.getpid() and _alive(row["pid"]):
                raise MlopsError(f"execution {execution_id} is still running (pid {row['pid']})")
            if row["status"] == "Succeeded":
                raise MlopsError(f"execution {execution_id} already succeeded; nothing to resume")
            con.execute(
                "UPDATE executions SET status='Executing', ended_at=NULL, failure_reason=NULL, pid=?,"
                " definition=?, parameters=?, attempts=attempts+1 WHERE id=?",
                (os.getpid(), json.dumps(definition), json.dumps(params), execution_id),
            )
        return row

    def finish_execution(self, execution_id: str, status: str, failure_reason: str | None) -> None:
        with self.db() as con:
            con.execute(
                "UPDATE executions SET status=?, ended_at=?, failure_reason=? WHERE id=?",
                (status, now(), failure_reason, execution_id),
            )

    def execution(self, execution_id: str) -> dict[str, Any] | None:
        with self.db() as con:
            row = con.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                matches = con.execute(
                    "SELECT * FROM executions WHERE id LIKE ? LIMIT 2", (execution_id + "%",)
                ).fetchall()
                row = matches[0] if len(matches) == 1 else None
            return _row(row)

    def executions(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute(
                "SELECT id, pipeline_name, status, started_at, ended_at, failure_reason, attempts"
                " FROM executions ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_row(r) for r in rows]

    # ----------------------------------------------------------------------------------------- steps

    def upsert_step(self, execution_id: str, name: str, **fields: Any) -> None:
        cols = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in fields.items()}
        with self.db() as con:
            con.execute(
                "INSERT INTO steps (execution_id, name, type, status) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (execution_id, name) DO NOTHING",
                (execution_id, name, fields.get("type", "?"), fields.get("status", "Pending")),
            )
            if cols:
                assignments = ", ".join(f"{k} = ?" for k in cols)
                con.execute(
                    f"UPDATE steps SET {assignments} WHERE execution_id = ? AND name = ?",
                    (*cols.values(), execution_id, name),
                )
            if "metrics" in fields and fields["metrics"]:
                con.execute("DELETE FROM metrics WHERE execution_id = ? AND step = ?", (execution_id, name))
                con.executemany(
                    "INSERT INTO metrics (execution_id, step, name, value) VALUES (?, ?, ?, ?)",
                    [(execution_id, name, k, float(v)) for k, v in fields["metrics"].items()],
                )

    def steps(self, execution_id: str) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute(
                "SELECT * FROM steps WHERE execution_id = ? ORDER BY started_at IS NULL, started_at, name",
                (execution_id,),
            ).fetchall()
        return [_row(r) for r in rows]

    def cached_step(self, cache_key: str, not_before: str) -> dict[str, Any] | None:
        """Newest succeeded step with this cache key that ended at or after ``not_before``."""
        with self.db() as con:
            row = con.execute(
                "SELECT * FROM steps WHERE cache_key = ? AND status = 'Succeeded' AND ended_at >= ?"
                " ORDER BY ended_at DESC LIMIT 1",
                (cache_key, not_before),
            ).fetchone()
        return _row(row)

    def add_event(self, execution_id: str, kind: str, step: str | None = None, message: str = "") -> None:
        with self.db() as con:
            con.execute(
                "INSERT INTO events (execution_id, at, step, kind, message) VALUES (?, ?, ?, ?, ?)",
                (execution_id, now(), step, kind, message),
            )

    def events(self, execution_id: str) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute(
                "SELECT at, step, kind, message FROM events WHERE execution_id = ? ORDER BY id",
                (execution_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    # -------------------------------------------------------------------------------------- registry

    def register_model_package(self, group: str, arn_prefix: str, **fields: Any) -> dict[str, Any]:
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
            stored = {k: (json.dumps(v) if k in JSON_COLUMNS | {"metrics"} else v) for k, v in row.items()}
            con.execute(
                f"INSERT INTO model_packages ({', '.join(stored)}) VALUES ({', '.join('?' * len(stored))})",
                tuple(stored.values()),
            )
        return row

    def model_packages(self, group: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM model_packages WHERE 1=1", []
        if group:
            sql, args = sql + " AND group_name = ?", [*args, group]
        if status:
            sql, args = sql + " AND approval_status = ?", [*args, status]
        with self.db() as con:
            rows = con.execute(sql + " ORDER BY group_name, version", args).fetchall()
        return [_row(r) for r in rows]

    def model_package(self, group: str, version: int) -> dict[str, Any] | None:
        with self.db() as con:
            row = con.execute(
                "SELECT * FROM model_packages WHERE group_name = ? AND version = ?", (group, version)
            ).fetchone()
        return _row(row)

    def set_approval_status(
        self, group: str, version: int, status: str, *, expected: str, actor: str, reason: str, action: str
    ) -> dict[str, Any]:
        """Change a version's status and append the audit row in one transaction.

        ``expected`` is the status the caller decided on; a concurrent change in between is refused rather
        than silently overwritten.
        """
        with self.db(immediate=True) as con:
            row = _row(
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
            con.execute(
                "INSERT INTO model_package_audit (group_name, version, arn, at, actor, action, from_status,"
                " to_status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (group, version, row["arn"], now(), actor, action, expected, status, reason),
            )
        row["approval_status"] = status
        return row

    def add_audit(self, package: dict[str, Any], *, actor: str, action: str, reason: str) -> None:
        """An audit row that changes no status (e.g. a repeated approval, a deployment outcome)."""
        status = package["approval_status"]
        with self.db() as con:
            con.execute(
                "INSERT INTO model_package_audit (group_name, version, arn, at, actor, action, from_status,"
                " to_status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (package["group_name"], package["version"], package["arn"], now(), actor, action, status,
                 status, reason),
            )  # fmt: skip

    def audit_trail(self, group: str, version: int) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute(
                "SELECT at, actor, action, from_status, to_status, reason FROM model_package_audit"
                " WHERE group_name = ? AND version = ? ORDER BY id",
                (group, version),
            ).fetchall()
        return [dict(r) for r in rows]

    # ------------------------------------------------------------------------------------ event bus

    def put_event(self, event: dict[str, Any]) -> None:
        """Record an EventBridge-shaped event (what AWS would put on the default bus)."""
        with self.db() as con:
            con.execute(
                "INSERT INTO bus_events (at, source, detail_type, resource, event) VALUES (?, ?, ?, ?, ?)",
                (now(), event["source"], event["detail-type"], (event.get("resources") or [None])[0],
                 json.dumps(event)),
            )  # fmt: skip

    def bus_events(self, resource: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT at, source, detail_type, resource, event FROM bus_events", []
        if resource:
            sql, args = sql + " WHERE resource = ?", [resource]
        with self.db() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [_row(r) for r in rows]

    # ----------------------------------------------------------------------------------- deployments

    def start_deployment(self, deployment_id: str, package_arn: str, target_stage: str) -> None:
        with self.db() as con:
            con.execute(
                "INSERT INTO deployments (id, package_arn, target_stage, status, started_at, endpoints, steps)"
                " VALUES (?, ?, ?, 'InProgress', ?, '{}', '[]')",
                (deployment_id, package_arn, target_stage, now()),
            )

    def update_deployment(self, deployment_id: str, **fields: Any) -> None:
        cols = {k: (json.dumps(v) if k in JSON_COLUMNS | {"steps"} else v) for k, v in fields.items()}
        if not cols:
            return
        with self.db() as con:
            con.execute(
                f"UPDATE deployments SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                (*cols.values(), deployment_id),
            )

    def deployments(self, package_arn: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM deployments", []
        if package_arn:
            sql, args = sql + " WHERE package_arn = ?", [package_arn]
        with self.db() as con:
            rows = con.execute(sql + " ORDER BY started_at", args).fetchall()
        out = []
        for r in rows:
            row = _row(r)
            row["steps"] = json.loads(row["steps"]) if row.get("steps") else []
            out.append(row)
        return out

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


_CONNECTIONS: dict[tuple[int, Path], tuple[sqlite3.Connection, threading.RLock]] = {}
_CONNECTIONS_LOCK = threading.Lock()


def _connection(path: Path) -> tuple[sqlite3.Connection, threading.RLock]:
    key = (os.getpid(), path)  # a forked child must not reuse its parent's connection
    with _CONNECTIONS_LOCK:
        if key not in _CONNECTIONS:
            try:
                con = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
                con.row_factory = sqlite3.Row
                con.execute("PRAGMA busy_timeout=30000")
                con.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as err:
                raise MlopsError(f"local database {path}: {err}") from err
            _CONNECTIONS[key] = (con, threading.RLock())
        return _CONNECTIONS[key]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
