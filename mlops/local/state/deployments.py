"""Local deployments of approved model versions."""

from __future__ import annotations

import json
from typing import Any

from mlops.local.state.home import JSON_COLUMNS, Home, _row, now


class Deployments:
    def __init__(self, home: Home):
        self.home = home
        self.root = home.root

    def db(self, immediate: bool = True):
        return self.home.db(immediate)

    def start(self, deployment_id: str, package_arn: str, target_stage: str) -> None:
        with self.db() as con:
            con.execute(
                "INSERT INTO deployments (id, package_arn, target_stage, status, started_at, endpoints, steps)"
                " VALUES (?, ?, ?, 'InProgress', ?, '{}', '[]')",
                (deployment_id, package_arn, target_stage, now()),
            )

    def update(self, deployment_id: str, **fields: Any) -> None:
        cols = {k: (json.dumps(v) if k in JSON_COLUMNS | {"steps"} else v) for k, v in fields.items()}
        if not cols:
            return
        with self.db() as con:
            con.execute(
                f"UPDATE deployments SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?",
                (*cols.values(), deployment_id),
            )

    def list(self, package_arn: str | None = None) -> list[dict[str, Any]]:
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
