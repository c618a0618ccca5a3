"""mlops: compile, validate, graph and run SageMaker pipelines; manage models, endpoints and AWS.

The one error boundary of the CLI: a typed error becomes one red line and its exit code (``--debug`` shows
the traceback), Ctrl-C exits 130 and a closed pipe (``mlops ... | head``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from mlops.cli.invocation import Invocation
from mlops.errors import MlopsError

# Each command group registers its own sub-commands.
GROUPS = (
    "mlops.cli.build",
    "mlops.cli.run",
    "mlops.cli.executions",
    "mlops.cli.logs",
    "mlops.cli.report",
    "mlops.cli.callback",
    "mlops.cli.models",
    "mlops.cli.endpoints",
    "mlops.cli.aws",
    "mlops.cli.schedule",
    "mlops.cli.buildspec",
    "mlops.cli.tracking",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--project",
        dest="project_dir",
        metavar="DIR",
        help="project root (default: $MLOPS_PROJECT_ROOT, else the nearest pyproject.toml with [tool.mlops])",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in GROUPS:
        importlib.import_module(module).register(sub)
    return parser


def _configure_logging(debug: bool) -> None:
    level = logging.DEBUG if debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.root.handlers:
        handler.setLevel(level)  # SDK modules set their own loggers to DEBUG: filter at the handler


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv, namespace=Invocation())
    _configure_logging(args.debug)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MlopsError as exc:
        if args.debug:
            raise
        from mlops.cli.console import err, escape

        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        err().print(f"[bold red]error:[/] {escape(lines[0])}")
        for extra in lines[1:]:
            err().print(escape(extra))
        return exc.exit_code
    except KeyboardInterrupt:
        from mlops.cli.console import err

        err().print("[yellow]interrupted[/]")
        return 130
    except BrokenPipeError:
        # the reader went away (| head): say nothing more, and keep Python from complaining at exit
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
