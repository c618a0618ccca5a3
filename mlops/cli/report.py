"""``mlops report EXECUTION``: an execution's story in one HTML page that works offline."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlops.cli.console import err, escape, out
from mlops.cli.invocation import Invocation, add_home


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a local execution's report: one HTML page that works offline",
        description="Write the report of a local execution: the DAG coloured by status with durations, the "
        "step table (cache hits, tries, failures, log links), training curves from the metric history, the "
        "evaluation report, the data-quality results with their data docs made to render offline, and each "
        "model version it registered with its lineage. `mlops run` writes it at the end of every run.",
    )
    p.add_argument(
        "execution", metavar="EXECUTION", help="execution id (a unique prefix will do), or 'latest'"
    )
    p.add_argument(
        "--out", type=Path, metavar="FILE",
        help="where to write it (default: report.html in the execution's directory of the home)",
    )  # fmt: skip
    add_home(p)
    p.set_defaults(func=cmd_report)


def cmd_report(args: Invocation) -> int:
    from mlops.local.report.render import write_report

    console = out()
    written = write_report(args.local_home, args.execution, args.out, progress=lambda line: err().print(line))
    for line in written.warnings:
        err().print(f"[yellow]warning:[/] {escape(line)}")
    console.print(f"report: {escape(str(written.path))}", soft_wrap=True)
    for index in written.data_docs:
        console.print(f"data docs: {escape(str(index))}", soft_wrap=True)
    return 0
