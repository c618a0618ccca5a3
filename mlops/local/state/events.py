"""Execution events (status changes) and the local event bus (EventBridge-shaped events)."""

from __future__ import annotations

import json
from typing import Any

from mlops.local.state.home import Home, _row, now


class Events:
    def __init__(self, home: Home):
        self.home = home
        self.root = home.root

    def db(self, immediate: bool = True):
        return self.home.db(immediate)

    def add(self, execution_id: str, kind: str, step: str | None = None, message: str = "") -> None:
        with self.db() as con:
            con.execute(
                "INSERT INTO events (execution_id, at, step, kind, message) VALUES (?, ?, ?, ?, ?)",
                (execution_id, now(), step, kind, message),
            )

    def for_execution(self, execution_id: str) -> list[dict[str, Any]]:
        with self.db() as con:
            rows = con.execute(
                "SELECT at, step, kind, message FROM events WHERE execution_id = ? ORDER BY id",
                (execution_id,),
            ).fetchall()
        return [dict(r) for r in rows]

    def publish(self, event: dict[str, Any]) -> None:
        """Record an EventBridge-shaped event (what AWS would put on the default bus)."""
        with self.db() as con:
            con.execute(
                "INSERT INTO bus_events (at, source, detail_type, resource, event) VALUES (?, ?, ?, ?, ?)",
                (now(), event["source"], event["detail-type"], (event.get("resources") or [None])[0],
                 json.dumps(event)),
            )  # fmt: skip

    def bus(self, resource: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT at, source, detail_type, resource, event FROM bus_events", []
        if resource:
            sql, args = sql + " WHERE resource = ?", [resource]
        with self.db() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [_row(r) for r in rows]
