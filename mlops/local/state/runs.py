"""Executions and their steps: what ``mlops run`` records and ``--resume`` reads."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from mlops.errors import MlopsError
from mlops.local.state.home import JSON_COLUMNS, Home, _row, now, pid_alive

# Columns added to ``executions`` after the first release: (name, SQL type), added to older databases.
MIGRATIONS = (("pid_started", "INTEGER"), ("code_source", "TEXT"))
# A step's final statuses: its job's metric history is read from its job dir when it reaches one.
_FINAL = ("Succeeded", "Failed", "Stopped")
# A metric whose name holds one of these is better lower; any other is better higher.
LOWER_IS_BETTER = ("loss", "error", "rmse", "mse", "mae", "mape")


def lower_is_better(name: str) -> bool:
    """Whether ``name``'s best value is its least: it names a loss or an error (``validation:loss``,
    ``train:rmse``, ``validation:merror``); accuracy, AUC, F1 and the rest are best highest."""
    lowered = name.lower()
    return any(word in lowered for word in LOWER_IS_BETTER)


def process_start_time(pid: int | None) -> int | None:
    """When ``pid`` started (``/proc/<pid>/stat`` field 22, clock ticks since boot); None when it is gone
    or a zombie. With the pid it names one process: a reused pid has another start time."""
    if not pid:
        return None
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # field 3 onwards; the name (field 2) may hold spaces
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return None
    return int(fields[22 - 3])


def executor_alive(pid: int | None, started: int | None) -> bool:
    """Whether the executor that recorded (pid, start time) still runs."""
    if pid == os.getpid():
        return True
    if not pid_alive(pid):
        return False
    if not os.path.exists("/proc/self/stat"):  # no /proc here: the pid alone has to do
        return True
    current = process_start_time(pid)
    return current is not None and (started is None or current == started)


def _migrate(con) -> None:
    have = {r["name"] for r in con.execute("PRAGMA table_info(executions)").fetchall()}
    for name, kind in MIGRATIONS:
        if name not in have:
            con.execute(f"ALTER TABLE executions ADD COLUMN {name} {kind}")


class Runs:
    def __init__(self, home: Home):
        self.home = home
        self.root = home.root
        with self.db() as con:
            _migrate(con)

    def reap(self, con) -> list[str]:
        """Fail every Executing execution whose executor is gone (SIGKILL, a crash, a full disk), so that
        none stays Executing for good; its Executing and Pending steps become Stopped. Returns their ids."""
        reaped = []
        rows = con.execute(
            "SELECT id, pid, pid_started FROM executions WHERE status = 'Executing'"
        ).fetchall()
        for row in rows:
            if executor_alive(row["pid"], row["pid_started"]):
                continue
            ended = now()
            reason = f"the executor (pid {row['pid']}) ended without recording an outcome"
            con.execute(
                "UPDATE executions SET status='Failed', ended_at=?, failure_reason=? WHERE id=? AND status='Executing'",
                (ended, reason, row["id"]),
            )
            con.execute(
                "UPDATE steps SET status='Stopped', ended_at=COALESCE(ended_at, ?), failure_reason=?"
                " WHERE execution_id=? AND status IN ('Executing', 'Pending')",
                (ended, reason, row["id"]),
            )
            reaped.append(row["id"])
        return reaped

    def db(self, immediate: bool = True):
        return self.home.db(immediate)

    def create(
        self,
        execution_id: str,
        pipeline_name: str,
        definition: dict,
        params: dict,
        source: dict | None = None,
    ) -> None:
        """``source``: where the definition came from (``mlops.local.source.git_source``), or None."""
        with self.db() as con:
            con.execute(
                "INSERT INTO executions"
                " (id, pipeline_name, status, definition, parameters, started_at, pid, pid_started, code_source)"
                " VALUES (?, ?, 'Executing', ?, ?, ?, ?, ?, ?)",
                (
                    execution_id, pipeline_name, json.dumps(definition), json.dumps(params), now(), os.getpid(),
                    process_start_time(os.getpid()), None if source is None else json.dumps(source),
                ),
            )  # fmt: skip

    def claim(
        self, execution_id: str, definition: dict, params: dict, source: dict | None = None
    ) -> dict[str, Any]:
        """Mark a recorded execution Executing again for a resume; refuse one that a live process runs.
        The resumed steps run the code of ``source`` now, so it replaces the recorded one (when given)."""
        with self.db(immediate=True) as con:
            self.reap(con)
            row = _row(con.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone())
            if row is None:
                raise MlopsError(f"no execution {execution_id} in {self.root}")
            if row["status"] == "Executing" and row["pid"] != os.getpid():
                raise MlopsError(f"execution {execution_id} is still running (pid {row['pid']})")
            if row["status"] == "Succeeded":
                raise MlopsError(f"execution {execution_id} already succeeded; nothing to resume")
            con.execute(
                "UPDATE executions SET status='Executing', ended_at=NULL, failure_reason=NULL, pid=?,"
                " pid_started=?, definition=?, parameters=?, attempts=attempts+1,"
                " code_source=COALESCE(?, code_source) WHERE id=?",
                (
                    os.getpid(),
                    process_start_time(os.getpid()),
                    json.dumps(definition),
                    json.dumps(params),
                    None if source is None else json.dumps(source),
                    execution_id,
                ),
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
            self.reap(con)
            row = con.execute("SELECT * FROM executions WHERE id = ?", (execution_id,)).fetchone()
            if row is None:
                matches = con.execute(
                    "SELECT * FROM executions WHERE id LIKE ? LIMIT 2", (execution_id + "%",)
                ).fetchall()
                row = matches[0] if len(matches) == 1 else None
            return _row(row)

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        with self.db() as con:
            self.reap(con)
            rows = con.execute(
                "SELECT id, pipeline_name, status, started_at, ended_at, failure_reason, attempts"
                " FROM executions ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [_row(r) for r in rows]

    def upsert_step(self, execution_id: str, name: str, **fields: Any) -> None:
        """Record a step's fields. With a final status and a ``job_dir``, the job's metric history (every
        value its metric regexes captured, :func:`mlops.local.runtime.common.read_metric_history`) replaces
        the step's rows in ``metric_history``: written once, at the step's end; a cache hit's ``job_dir`` is
        the run that made it, so it gets that run's history, as it gets its metrics."""
        cols = {k: (json.dumps(v) if k in JSON_COLUMNS and v is not None else v) for k, v in fields.items()}
        history = None
        if fields.get("status") in _FINAL and fields.get("job_dir"):
            from mlops.local.runtime.common import read_metric_history

            history = read_metric_history(fields["job_dir"])
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
                con.executemany(  # a NaN (SQLite would store NULL in a NOT NULL column) stays in steps.metrics
                    "INSERT INTO metrics (execution_id, step, name, value) VALUES (?, ?, ?, ?)",
                    [
                        (execution_id, name, k, float(v))
                        for k, v in fields["metrics"].items()
                        if not math.isnan(float(v))
                    ],
                )
            if history is not None:
                con.execute(
                    "DELETE FROM metric_history WHERE execution_id = ? AND step = ?", (execution_id, name)
                )
                con.executemany(
                    "INSERT OR REPLACE INTO metric_history"
                    " (execution_id, step, name, host, seq, value, timestamp, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (execution_id, name, p["name"], p["host"], p["seq"], p["value"], p["timestamp"], p["epoch"])
                        for p in history
                    ],
                )  # fmt: skip

    def metric_history(
        self, execution_id: str, step: str | None = None, name: str | None = None
    ) -> list[dict[str, Any]]:
        """Every recorded value of the execution's metrics (of one step, one name), in the order they were
        read: ``step, name, host, seq, value`` (None for NaN), ``timestamp, epoch`` (None when the line
        carried none)."""
        where, args = ["execution_id = ?"], [execution_id]
        for column, value in (("step", step), ("name", name)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        with self.db(immediate=False) as con:
            rows = con.execute(
                "SELECT step, name, host, seq, value, timestamp, epoch FROM metric_history"
                f" WHERE {' AND '.join(where)} ORDER BY step, timestamp, rowid",
                args,
            ).fetchall()
        return [dict(r) for r in rows]

    def metric_summary(self, execution_id: str, step: str | None = None) -> list[dict[str, Any]]:
        """One row per step and metric with history: ``last`` (the value read last, whichever host: the
        ``metrics`` table's value), ``best`` (the least for a name :func:`lower_is_better` says, else the
        greatest; the first such point) with ``best_host``, ``best_seq`` and ``best_epoch``, ``direction``
        (``min``/``max``), ``points`` and ``hosts``."""
        series: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for point in self.metric_history(execution_id, step):
            series.setdefault((point["step"], point["name"]), []).append(point)
        summary = []
        for (step_name, name), points in sorted(series.items()):
            lower = lower_is_better(name)
            best = None
            for p in points:
                if p["value"] is not None and (
                    best is None or (p["value"] < best["value"] if lower else p["value"] > best["value"])
                ):
                    best = p
            last = points[-1]
            summary.append(
                {
                    "step": step_name, "name": name, "last": last["value"], "last_host": last["host"],
                    "last_timestamp": last["timestamp"], "direction": "min" if lower else "max",
                    "best": None if best is None else best["value"],
                    "best_host": None if best is None else best["host"],
                    "best_seq": None if best is None else best["seq"],
                    "best_epoch": None if best is None else best["epoch"],
                    "points": len(points), "hosts": sorted({p["host"] for p in points}, key=_host_order),
                }
            )  # fmt: skip
        return summary

    def resolve(self, text: str) -> str:
        """The id of the execution ``text`` names: its id, ``latest`` (the one started last) or a unique
        prefix of one id. MlopsError names what is wrong: no executions, no match (with the recent ids), or
        the ids an ambiguous prefix fits."""
        text = text.strip()
        recent = [r["id"] for r in self.list(limit=5)]
        if text == "latest":
            if not recent:
                raise MlopsError(f"no executions in {self.root} yet")
            return recent[0]
        if text:
            with self.db(immediate=False) as con:
                if con.execute("SELECT 1 FROM executions WHERE id = ?", (text,)).fetchone():
                    return text
                pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
                matches = [
                    r["id"]
                    for r in con.execute(
                        "SELECT id FROM executions WHERE id LIKE ? ESCAPE '\\' ORDER BY started_at DESC LIMIT 6",
                        (pattern,),
                    ).fetchall()
                ]
            if len(matches) == 1:
                return matches[0]
            if matches:
                shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
                raise MlopsError(f"execution prefix {text!r} is ambiguous: it matches {shown}")
        raise MlopsError(
            f"no execution {text!r} in {self.root} (recent: {', '.join(recent) if recent else 'none yet'}; "
            "or 'latest')"
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


def _host_order(host: str) -> tuple[str, int]:
    """``algo-2`` before ``algo-10``."""
    base, _, number = host.rpartition("-")
    return (base, int(number)) if number.isdigit() else (host, -1)
