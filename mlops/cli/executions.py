"""``mlops executions list | show ID``: what local runs recorded."""

from __future__ import annotations

import argparse
import json

from rich import box
from rich.console import Console
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
    from mlops.local.records import ExecutionRecord

    home = args.local_home
    record = ExecutionRecord.load(home, home.runs.resolve(args.execution_id))
    summary = home.runs.metric_summary(record.id)
    if args.format == "json":
        print_json({**record.to_dict(), "metric_summary": summary})
        return 0
    render_show(out(), record, summary)
    return 0


def render_show(console: Console, record, summary: list[dict]) -> None:
    """The execution's header, its steps, each step's log files and, for each step with a metric history,
    its metric table. Tables fit 80 columns: short columns never wrap (an ellipsis ends what does not
    fit), metrics and failures wrap on words, and log paths are whole lines of their own."""
    console.print(
        f"execution [bold]{record.id}[/]  pipeline {escape(record.pipeline_name)}  status {record.status}\n"
        f"started {short_time(record.started_at)}  ended {short_time(record.ended_at)}  "
        f"parameters {escape(json.dumps(record.parameters))}"
    )
    if record.failure_reason:
        console.print(f"[red]failure: {escape(record.failure_reason)}[/]")
    with_history = {row["step"] for row in summary}
    day = short_time(record.started_at)[:10]
    table = Table(title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    table.add_column("step", min_width=6, max_width=32, no_wrap=True, overflow="ellipsis")
    table.add_column("type", min_width=6, no_wrap=True, overflow="ellipsis")
    table.add_column("status", min_width=9, no_wrap=True, overflow="ellipsis")
    table.add_column("started", min_width=8, no_wrap=True, overflow="ellipsis")
    table.add_column("took", justify="right", no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("metrics", min_width=12, overflow="fold")
    table.add_column("failure", min_width=12, overflow="fold")
    for s in record.steps.values():
        started = short_time(s.started_at)
        table.add_row(
            escape(s.name),
            s.type,
            "cache hit" if s.cache_hit else str(s.status),
            started[11:] if started[:10] == day else started,  # the day is the execution's, above
            "" if s.duration_s is None else f"{s.duration_s:.1f}s",
            str(s.attempts),
            "see below"
            if s.name in with_history
            else ", ".join(f"{k}={v:.4g}" for k, v in sorted(s.metrics.items())),
            escape(s.failure_reason.strip().splitlines()[-1]) if (s.failure_reason or "").strip() else "",
        )
    console.print(table, soft_wrap=False)  # soft wrapping would let a table grow past the width
    logs = [(s.name, path) for s in record.steps.values() for path in s.log_paths]
    if logs:
        console.print("logs:")
        for name, path in logs:
            console.print(f"  {escape(name)}  {escape(path)}", soft_wrap=True)  # one line, to copy
    for step in dict.fromkeys(row["step"] for row in summary):
        console.print(metric_table(step, [row for row in summary if row["step"] == step]), soft_wrap=False)


def metric_table(step: str, rows: list[dict]) -> Table:
    """One step's metrics: the last value, the best (↓ least, ↑ greatest) and where it was (its epoch, else
    its seq: the n-th value on its host, from 0; and the host, when several), how many points and on which
    hosts; sized for 80 columns (long names end in an ellipsis, never fold)."""
    table = Table(
        title=f"metrics: {escape(step)}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        show_edge=False,
    )
    table.add_column("metric", min_width=10, max_width=28, no_wrap=True, overflow="ellipsis")
    for col in ("last", "best"):
        table.add_column(col, justify="right", min_width=6, no_wrap=True, overflow="ellipsis")
    table.add_column("best at", min_width=7, no_wrap=True, overflow="ellipsis")
    table.add_column("points", justify="right", min_width=6, no_wrap=True)
    table.add_column("hosts", min_width=6, no_wrap=True, overflow="ellipsis")
    for row in rows:
        hosts = row["hosts"]
        where = (
            "" if row["best"] is None
            else f"epoch {row['best_epoch']}" if row["best_epoch"] is not None
            else f"seq {row['best_seq']}"
        )  # fmt: skip
        if len(hosts) > 1 and where:
            where += f" {row['best_host']}"
        table.add_row(
            escape(row["name"]),
            _number(row["last"]),
            _number(row["best"])
            + ("" if row["best"] is None else " ↓" if row["direction"] == "min" else " ↑"),
            where,
            str(row["points"]),
            escape(_hosts(hosts)),
        )
    return table


def _number(value: float | None) -> str:
    return "nan" if value is None else f"{value:.4g}"


def _hosts(hosts: list[str]) -> str:
    """``algo-1,2`` for algo-1 and algo-2, ``algo-1..4`` for algo-1 to algo-4, else the names."""
    numbers = [h.removeprefix("algo-") for h in hosts]
    if len(hosts) < 2 or not all(n.isdigit() for n in numbers):
        return ",".join(hosts)
    if len(hosts) > 2 and [int(n) for n in numbers] == list(range(1, len(hosts) + 1)):
        return f"algo-1..{len(hosts)}"
    return "algo-" + ",".join(numbers)
