"""``mlops executions list | show ID``: what local runs recorded."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from mlops.cli.console import escape, out, print_json, short_time
from mlops.cli.invocation import Invocation, add_format, add_home


def register(sub: argparse._SubParsersAction) -> None:
    executions = sub.add_parser("executions", help="local pipeline executions")
    group = executions.add_subparsers(dest="executions_command", required=True, metavar="COMMAND")
    listing = group.add_parser("list", help="recent local executions")
    listing.add_argument("--limit", type=int, default=20, help="how many (default: %(default)s)")
    add_home(listing)
    add_format(listing)
    listing.set_defaults(func=cmd_list)
    show = group.add_parser("show", help="one execution: steps, timings, metrics, failures, logs")
    show.add_argument(
        "execution_id", metavar="ID", help="execution id (a unique prefix will do), or 'latest'"
    )
    add_home(show)
    add_format(show)
    show.set_defaults(func=cmd_show)


def cmd_list(args: Invocation) -> int:
    rows = args.local_home.runs.list(limit=args.limit)
    if args.format == "json":
        print_json(rows)
        return 0
    table = Table(title="local executions", title_justify="left")
    for col in ("id", "pipeline", "status", "started", "ended", "failure"):
        table.add_column(col, overflow="fold" if col == "failure" else "ellipsis")
    for r in rows:
        table.add_row(
            r["id"],
            r["pipeline_name"],
            r["status"],
            short_time(r["started_at"]),
            short_time(r["ended_at"]),
            escape((r["failure_reason"] or "")[:120]),
        )
    out().print(table)
    return 0


def cmd_show(args: Invocation) -> int:
    from mlops.cli.progress import key_metric
    from mlops.local.records import ExecutionRecord

    home = args.local_home
    execution_id = args.execution_id
    if execution_id == "latest":
        latest = home.runs.list(limit=1)
        if not latest:
            from mlops.errors import MlopsError

            raise MlopsError(f"no executions in {home.root} yet")
        execution_id = latest[0]["id"]
    record = ExecutionRecord.load(home, execution_id)
    if args.format == "json":
        print_json(record.to_dict())
        return 0
    console = out()
    console.print(
        f"execution [bold]{record.id}[/]  pipeline {escape(record.pipeline_name)}  status {record.status}\n"
        f"started {short_time(record.started_at)}  ended {short_time(record.ended_at)}  "
        f"parameters {escape(json.dumps(record.parameters))}"
    )
    if record.failure_reason:
        console.print(f"[red]failure: {escape(record.failure_reason)}[/]")
    table = Table(title_justify="left")
    for col in ("step", "type", "status", "started", "duration", "attempts", "metrics", "failure", "logs"):
        table.add_column(col, overflow="fold")
    for s in record.steps.values():
        table.add_row(
            s.name,
            s.type,
            "cache hit" if s.cache_hit else str(s.status),
            short_time(s.started_at),
            "" if s.duration_s is None else f"{s.duration_s:.1f}s",
            str(s.attempts),
            ", ".join(f"{k}={v:.4g}" for k, v in sorted(s.metrics.items())) or key_metric(s),
            escape(s.failure_reason.strip().splitlines()[-1]) if (s.failure_reason or "").strip() else "",
            "\n".join(s.log_paths),
        )
    console.print(table)
    return 0
