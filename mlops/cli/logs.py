"""``mlops logs EXECUTION [STEP]``: the job logs of a local execution, printed or followed while it runs."""

from __future__ import annotations

import argparse

from rich.text import Text

from mlops.cli.console import out
from mlops.cli.invocation import Invocation, add_home


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "logs",
        help="the job logs of a local execution (-f: follow it while it runs)",
        description="Print the job logs of a local execution's steps, in start order, a header per step and "
        "host; with -f, follow them until the execution ends.",
    )
    p.add_argument(
        "execution", metavar="EXECUTION", help="execution id (a unique prefix will do), or 'latest'"
    )
    p.add_argument("step", metavar="STEP", nargs="?", help="only this step (default: every step)")
    p.add_argument("--host", metavar="algo-N", help="only this host (a Tuning step: every trial's algo-N)")
    p.add_argument(
        "-f", "--follow", action="store_true",
        help="keep printing new lines (and steps that start later) until the execution ends",
    )  # fmt: skip
    p.add_argument("--lines", type=int, metavar="N", help="start from the last N lines of each log")
    add_home(p)
    p.set_defaults(func=cmd_logs)


def cmd_logs(args: Invocation) -> int:
    from mlops.local.logs import ExecutionLogs, LogSource

    home = args.local_home
    execution_id = home.runs.resolve(args.execution)
    logs = ExecutionLogs(home, execution_id, step=args.step, host=args.host, lines=args.lines)
    console = out()
    # one step and one host: its lines as they are; anything more: a header per file, lines prefixed
    several = args.step is None or args.host is None
    items = logs.follow() if args.follow else logs.read()
    shown = 0
    try:
        for item in items:
            if isinstance(item, LogSource):
                shown += 1
                if several:
                    console.print(Text(f"==> {item.label} ({item.path}) <==", style="bold"))
                continue
            line = Text(item.text)
            if several:
                line = Text.assemble((f"[{item.source.label}] ", "dim"), line)
            console.print(line, soft_wrap=True, highlight=False)
    except KeyboardInterrupt:
        return 130  # Ctrl-C while following: quietly
    if not shown:
        from mlops.cli.console import err

        what = f"step {args.step}" if args.step else f"execution {execution_id}"
        err().print(Text(f"{what}: no job logs" + (f" from host {args.host}" if args.host else "")))
    return 0
