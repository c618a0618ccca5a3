"""Executions and their steps: what ``mlops run`` records and ``--resume`` reads."""

from __future__ import annotations

import json
import os
from typing import Any

from mlops.errors import MlopsError
from mlops.local.state.home import JSON_COLUMNS, Home, _alive, _row, now


class Runs:
    def __init__(self, home: Home):
        self.home = home
        self.root = home.root

    def db(self, immediate: bool = True):
        return self.home.db(immediate)

    def create(self, execution_id: str, pipeline_name: str, definition: dict, params: dict) -> None:
        with self.db() as con:
            con.execute(
                "INSERT INTO executions (id, pipeline_name, status, definition, parameters, started_at, pid)"
                " VALUES (?, ?, 'Executing', ?, ?, ?, ?)",
                (execution_id, pipeline_name, json.dumps(definition), json.dumps(params), now(), os.getpid()),
            )

    def claim(self, execution_id: str, definition: dict, params: dict) -> dict[str, Any]:
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

    def finish(self, execution_id: str, status: str, failure_reason: str | None) -> None:
        with self.db() as con:
            con.execute(
                "UPDATE executions SET status=?, ended_at=?, failure_reason=? WHERE id=?",
                (status, now(), failure_reason, execution_id),
            )

    def get(self, execution_id: str) -> dict[str, Any] | None:
        with self.db() as con:
            row = con.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                matches = con.execute(
                    "SELECT * FROM executions WHERE id LIKE ? LIMIT 2", (execution_id + "%",)
                ).fetchall()
                row = matches[0] if len(matches) == 1 else None
            return _row(row)

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute(
                "SELECT id, pipeline_name, status, started_at, ended_at, failure_reason, attempts"
                " FROM executions ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_row(r) for r in rows]

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
