"""The local model registry: groups, versions, approval status, the audit trail, created models."""

from __future__ import annotations

import json
from typing import Any

from mlops.errors import MlopsError
from mlops.local.state.home import JSON_COLUMNS, Home, _row, now


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
            stored = {k: (json.dumps(v) if k in JSON_COLUMNS | {"metrics"} else v) for k, v in row.items()}
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
        return [_row(r) for r in rows]

    def get(self, group: str, version: int) -> dict[str, Any] | None:
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
