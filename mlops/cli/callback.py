"""``mlops callback list | succeed TOKEN --output K=V | fail TOKEN --reason R``: the Callback steps that wait
in local runs, completed as SendPipelineExecutionStepSuccess / SendPipelineExecutionStepFailure do."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from mlops.cli.console import escape, out, print_json
from mlops.cli.invocation import Invocation, add_format, add_home


def register(sub: argparse._SubParsersAction) -> None:
    callback = sub.add_parser("callback", help="Callback steps waiting in local runs")
    group = callback.add_subparsers(dest="callback_command", required=True, metavar="COMMAND")
    listing = group.add_parser(
        "list", help="waiting callbacks: token, execution, step, queue, arguments, age"
    )
    add_home(listing)
    add_format(listing)
    listing.set_defaults(func=cmd_list)
    succeed = group.add_parser(
        "succeed", help="complete a waiting Callback step (SendPipelineExecutionStepSuccess)"
    )
    succeed.add_argument("token", metavar="TOKEN", help="the callback token (mlops callback list)")
    succeed.add_argument(
        "--output", action="append", default=[], metavar="NAME=VALUE",
        help="an output parameter of the step, typed as the step declares it (repeat for each)",
    )  # fmt: skip
    add_home(succeed)
    succeed.set_defaults(func=cmd_succeed)
    fail = group.add_parser("fail", help="fail a waiting Callback step (SendPipelineExecutionStepFailure)")
    fail.add_argument("token", metavar="TOKEN", help="the callback token (mlops callback list)")
    fail.add_argument(
        "--reason", required=True, help="why: the step's failure reason (256 characters at most)"
    )
    add_home(fail)
    fail.set_defaults(func=cmd_fail)


def _queue(args: Invocation):
    from mlops.local.handlers.callback import Callbacks

    return Callbacks(args.local_home)


def cmd_list(args: Invocation) -> int:
    from mlops.local.handlers.callback import age

    rows = _queue(args).waiting()
    if args.format == "json":
        print_json([
            {"token": r["token"], "execution_id": r["execution_id"], "step": r["step"], "queue": r["queue_url"],
             "arguments": r["message"]["arguments"], "outputs": r["outputs"], "created_at": r["created_at"],
             "message": r["message"]}
            for r in rows
        ])  # fmt: skip
        return 0
    table = Table(title="waiting callbacks", title_justify="left")
    for col in ("token", "execution", "step", "queue", "arguments", "outputs", "age"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["token"],
            r["execution_id"],
            escape(r["step"]),
            escape(r["queue_url"]),
            escape(json.dumps(r["message"]["arguments"])[:300]),
            escape(", ".join(f"{n}: {t}" for n, t in r["outputs"])),
            age(r["created_at"]),
        )
    out().print(table)
    return 0


def _assignments(items: list[str]) -> dict[str, str]:
    from mlops.local.handlers.callback import CallbackError

    found: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CallbackError(f"--output {item!r}: expected NAME=VALUE")
        if name.strip() in found:
            raise CallbackError(f"--output {name.strip()} given twice")
        found[name.strip()] = value
    return found


def cmd_succeed(args: Invocation) -> int:
    row = _queue(args).succeed(args.token, _assignments(args.output))
    out().print(
        f"[green]callback {args.token} succeeded[/]: step {escape(row['step'])} of execution {row['execution_id']}"
    )
    return 0


def cmd_fail(args: Invocation) -> int:
    row = _queue(args).fail(args.token, args.reason)
    out().print(
        f"callback {args.token} failed: step {escape(row['step'])} of execution {row['execution_id']}"
    )
    return 0
