"""``mlops schedule``: the project's schedules, when they run next, and a local scheduler that starts them."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from rich.table import Table

from mlops.cli.console import err, out, print_json
from mlops.cli.invocation import add_env, add_home
from mlops.errors import MlopsError


def register(subparsers: argparse._SubParsersAction) -> None:
    schedule = subparsers.add_parser(
        "schedule", help="the project's schedules: next run times, and a local scheduler that starts them"
    )
    sub = schedule.add_subparsers(dest="schedule_command", metavar="COMMAND")
    schedule.set_defaults(func=_show, count=5, format="table", after=None)
    add_env(schedule)

    p = sub.add_parser("show", help="each schedule's expression, time zone, window and next run times")
    add_env(p)
    p.add_argument("--count", type=int, default=5, help="how many next run times (default 5)")
    p.add_argument("--after", type=_instant, help="from this instant (ISO 8601, default now)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    p.set_defaults(func=_show)

    p = sub.add_parser(
        "run", help="start each enabled schedule's pipeline at its due times, as EventBridge Scheduler does"
    )
    add_env(p)
    add_home(p)
    p.add_argument(
        "--max-starts", type=int, metavar="N", help="stop after N starts (default: run until Ctrl-C)"
    )
    p.add_argument("--until", type=_instant, metavar="TIME", help="stop before the first due time past this")
    p.add_argument(
        "--rehearse-from", type=_instant, metavar="TIME",
        help="the scheduler's clock starts at this instant (ISO 8601) and runs at real speed",
    )  # fmt: skip
    p.set_defaults(func=_run)


class ScheduleArgumentError(MlopsError):
    exit_code = 2


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-12-01T03:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _schedules(args):
    from mlops.local.schedule import project_schedules

    return project_schedules(args.config, args.project.declaration.schedules_of())


def _show(args) -> int:
    from mlops.local.schedule import local_zone_time, window_end

    after = args.after or datetime.now(UTC)
    schedules = _schedules(args)
    if args.format == "json":
        print_json([
            {"schedule": s.path, "pipeline": s.pipeline, "expression": s.expression, "timezone": s.timezone,
             "enabled": s.enabled, "flexible_window_minutes": s.window_minutes,
             "next": [t.isoformat() for t in s.next_times(after, args.count)]}
            for s in schedules
        ])  # fmt: skip
        return 0
    console = out()
    for s in schedules:
        state = "enabled" if s.enabled else "[yellow]disabled[/] (no start locally; on AWS State DISABLED)"
        console.print(
            f"[bold]{s.path}[/] starts [bold]{s.pipeline}[/]: {s.expression} in {s.timezone}, {state}"
        )
        table = Table(show_header=True, box=None, pad_edge=False)
        table.add_column("next run (UTC)", no_wrap=True)
        table.add_column(f"local ({s.timezone})", no_wrap=True)
        if s.window_minutes:
            table.add_column(f"latest start ({s.window_minutes} min window)", no_wrap=True)
        for t in s.next_times(after, args.count):
            row = [t.strftime("%Y-%m-%d %H:%M"), local_zone_time(t, s.timezone)]
            if s.window_minutes:
                row.append(window_end(t, s.window_minutes).strftime("%Y-%m-%d %H:%M"))
            table.add_row(*row)
        console.print(table)
    return 0


def _run(args) -> int:
    from mlops.local.schedule import LocalScheduler, cli_starter

    console = err()
    scheduler = LocalScheduler(
        Path(args.home_root), _schedules(args), cli_starter(Path(args.home_root), args.environment, args.project_dir),
        rehearse_from=args.rehearse_from, on_event=lambda line: console.print(line, highlight=False, soft_wrap=True),
    )  # fmt: skip
    try:
        starts = scheduler.run(max_starts=args.max_starts, until=args.until)
    except KeyboardInterrupt:
        return 130
    failed = [s for s in starts if s.exit_code]
    out().print(
        f"{len(starts)} start(s), {len(failed)} failed; recorded in {scheduler.directory / 'starts.jsonl'}"
    )
    return 1 if failed else 0
