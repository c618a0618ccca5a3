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
from functools import cached_property
from pathlib import Path
from typing import Any

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
    attempts INTEGER NOT NULL DEFAULT 1,
    pid_started INTEGER,
    code_source TEXT
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
-- Every value a training job's metric regexes captured (``metrics`` keeps the last of each name); a table an
-- older home lacks is created when it is opened, like every table here.
CREATE TABLE IF NOT EXISTS metric_history (
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    name TEXT NOT NULL,
    host TEXT NOT NULL,
    seq INTEGER NOT NULL,  -- the n-th value of this name on this host, from 0
    value REAL,  -- NULL for NaN: SQLite stores no NaN
    timestamp TEXT NOT NULL,  -- when the executor read the line (CloudWatch: the log event's time)
    epoch INTEGER,  -- the line's epoch when it carries one
    PRIMARY KEY (execution_id, step, name, host, seq)
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
    reason TEXT,
    prev_hash TEXT,
    row_hash TEXT
);
CREATE TRIGGER IF NOT EXISTS model_package_audit_is_kept BEFORE DELETE ON model_package_audit
BEGIN SELECT RAISE(ABORT, 'the model package audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS model_package_audit_is_final BEFORE UPDATE ON model_package_audit
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
    "code_source",
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


HOME_ENV = "MLOPS_HOME"


def resolve_home(explicit: str | Path | None, default: Path | None, environ=None) -> Path:
    """The one rule, applied at the CLI edge: ``--home`` beats ``$MLOPS_HOME`` beats the project's ``.mlops``."""
    environ = os.environ if environ is None else environ
    chosen = explicit or environ.get(HOME_ENV) or default
    if not chosen:
        raise MlopsError("no local home: pass --home DIR, set MLOPS_HOME or run inside a project")
    return Path(chosen).expanduser().resolve()


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
    def open(cls, home: str | Path) -> Home:
        root = Path(home).expanduser().resolve()
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
                    from mlops.local.state.registry import migrate_audit

                    migrate_audit(con)  # columns an older home lacks (guarded by PRAGMA table_info)
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

    @cached_property
    def runs(self):
        from mlops.local.state.runs import Runs

        return Runs(self)

    @cached_property
    def events(self):
        from mlops.local.state.events import Events

        return Events(self)

    @cached_property
    def registry(self):
        from mlops.local.state.registry import ModelRegistry

        return ModelRegistry(self)

    @cached_property
    def deployments(self):
        from mlops.local.state.deployments import Deployments

        return Deployments(self)


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


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (one of another user counts)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
