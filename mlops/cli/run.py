"""CLI for the local executor: ``mlops run``, ``mlops executions list|show``, ``mlops models ...``.

``register(subparsers)`` adds the commands to the main parser; ``main()`` runs them on their own
(``python -m mlops.cli.run run ...``), which the tests and scripts use.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlops.cli.models import register as register_models
from mlops.cli.progress import RunProgress, key_metric
from mlops.definition.expressions import parse_assignments
from mlops.errors import DefinitionError, MlopsError
from mlops.local.scheduler import ExecutionRecord, run_definition
from mlops.local.state.home import Home

DEFAULT_ENV = "local"


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the pipeline locally (no Docker, no AWS)",
        description="Run the compiled model-build pipeline (--env, default 'local') or any pipeline "
        "definition JSON (--definition) on this machine.",
    )
    source = run.add_mutually_exclusive_group()
    source.add_argument("--env", help=f"config environment to compile and run (default: {DEFAULT_ENV})")
    source.add_argument(
        "--definition", type=Path, metavar="FILE.json", help="pipeline definition JSON to run"
    )
    run.add_argument(
        "--pipeline",
        choices=["model-build", "model-deploy"],
        default="model-build",
        help="which compiled pipeline of --env to run (default: %(default)s; model-deploy needs "
        "--param ModelPackageArn=... of an Approved version)",
    )
    run.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="override a parameter"
    )
    run.add_argument("--resume", metavar="EXECUTION_ID", help="re-run only what failed or never ran")
    run.add_argument("--no-cache", action="store_true", help="ignore CacheConfig: run every step")
    run.add_argument("--max-parallel", type=int, metavar="N", help="steps at once (default: config or cores)")
    run.add_argument("--logs", action="store_true", help="print job log lines (plain output only)")
    run.add_argument("--name", help="pipeline name to record (default: from config or the file name)")
    _home_arg(run)
    run.set_defaults(func=cmd_run)

    executions = subparsers.add_parser("executions", help="local pipeline executions")
    sub = executions.add_subparsers(dest="executions_command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", help="recent local executions")
    listing.add_argument("--limit", type=int, default=20)
    _home_arg(listing)
    _format_arg(listing)
    listing.set_defaults(func=cmd_executions_list)
    show = sub.add_parser("show", help="one execution: steps, timings, metrics, failures, logs")
    show.add_argument("execution_id", metavar="ID")
    _home_arg(show)
    _format_arg(show)
    show.set_defaults(func=cmd_executions_show)

    models = subparsers.add_parser(
        "models", help="the model registry: local, or SageMaker's with --target aws"
    )
    register_models(models.add_subparsers(dest="models_command", required=True, metavar="COMMAND"))


def _home_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, help="local home (default: $MLOPS_HOME or <repo>/.mlops)")


def _format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["table", "json"], default="table")


# ---------------------------------------------------------------------------------------------------- run


def prepare_env(env: str, home: Home, console: Console, pipeline: str = "model-build") -> dict[str, Any]:
    """Compile ``env``, upload its code bundles, seed the digits data if the input prefix is empty.

    Returns the ``run_definition`` keyword arguments that depend on the config.
    """
    from mlops.compile.compiler import BUILD, compile_cached
    from mlops.config import load_config
    from mlops.local.s3store import S3Store

    cfg = load_config(env)
    console.print(f"compiling {env} …", highlight=False)
    compiled = compile_cached(cfg)
    store = S3Store(home.s3_root)
    for bundle in compiled.bundles:
        store.put_tree(bundle.s3_uri, bundle.source)
    prefix = cfg.data.input_uri.rstrip("/") + "/"
    if not store.list(prefix):
        from steps.preprocess.data import write_digits_csv

        with tempfile.TemporaryDirectory() as tmp:
            csv = Path(tmp) / "digits.csv"
            rows = write_digits_csv(csv)
            store.put_file(prefix + "digits.csv", csv)
        console.print(f"seeded {rows} digits rows into {prefix}", highlight=False)
    kwargs = {
        "definition": compiled.definition(pipeline),
        "pipeline_name": compiled.pipeline_names.get(pipeline),
        "file_systems": dict(cfg.local.file_systems),
        "max_parallel": cfg.local.max_parallel_steps,
    }
    if pipeline != BUILD:
        endpoints = {
            f"{cfg.project.name}-{stage}": getattr(cfg.endpoints, stage)
            for stage in ("staging", "production")
        }
        kwargs["endpoint_ports"] = {name: e.local_port for name, e in endpoints.items()}
    return kwargs


def _read_definition(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DefinitionError(f"{path}: file not found") from None
    except ValueError as err:
        raise DefinitionError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected a JSON object (a pipeline definition)")
    return data


def cmd_run(args: argparse.Namespace) -> int:
    console = Console()
    home = Home.open(args.home)
    params = parse_assignments(args.param)
    if args.definition:
        kwargs: dict[str, Any] = {
            "definition": _read_definition(args.definition),
            "pipeline_name": args.definition.stem,
        }
    else:
        kwargs = prepare_env(args.env or DEFAULT_ENV, home, console, args.pipeline)
    if args.name:
        kwargs["pipeline_name"] = args.name
    if args.max_parallel:
        kwargs["max_parallel"] = args.max_parallel
    with RunProgress(console, show_logs=args.logs) as progress:
        record = run_definition(
            **kwargs,
            home=home.root,
            params=params,
            resume=args.resume,
            use_cache=not args.no_cache,
            on_event=progress,
        )
    if record.status == "Succeeded":
        console.print(f"[green]execution {record.id} Succeeded[/]", highlight=False)
        return 0
    reason = (record.failure_reason or record.status).strip().splitlines()
    line = f"execution {record.id} {record.status}: {reason[-1] if reason else ''}"
    console.print(f"[red]{escape(line)}[/]", highlight=False, soft_wrap=True)
    if record.status == "Failed":
        console.print(f"resume with: mlops run --resume {record.id}", highlight=False)
    return 130 if record.status == "Stopped" else 1


# ------------------------------------------------------------------------------------------ executions


def _console() -> Console:
    """A terminal gets its own width; a pipe or file gets wide tables rather than columns folded to 80."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _short_time(iso: str | None) -> str:
    return (iso or "")[:19].replace("T", " ")


def cmd_executions_list(args: argparse.Namespace) -> int:
    rows = Home.open(args.home).executions(limit=args.limit)
    if args.format == "json":
        _print_json(rows)
        return 0
    table = Table(title="local executions", title_justify="left")
    for col in ("id", "pipeline", "status", "started", "ended", "failure"):
        table.add_column(col, overflow="fold" if col == "failure" else "ellipsis")
    for r in rows:
        table.add_row(
            r["id"],
            r["pipeline_name"],
            r["status"],
            _short_time(r["started_at"]),
            _short_time(r["ended_at"]),
            escape((r["failure_reason"] or "")[:120]),
        )
    _console().print(table)
    return 0


def cmd_executions_show(args: argparse.Namespace) -> int:
    home = Home.open(args.home)
    record = ExecutionRecord.load(home, args.execution_id)
    if args.format == "json":
        _print_json(record.to_dict())
        return 0
    console = _console()
    console.print(
        f"execution [bold]{record.id}[/]  pipeline {record.pipeline_name}  status {record.status}\n"
        f"started {_short_time(record.started_at)}  ended {_short_time(record.ended_at)}  "
        f"parameters {json.dumps(record.parameters)}",
        highlight=False,
    )
    if record.failure_reason:
        console.print(f"[red]failure: {escape(record.failure_reason)}[/]", highlight=False, soft_wrap=True)
    table = Table(title_justify="left")
    for col in ("step", "type", "status", "started", "duration", "attempts", "metrics", "failure", "logs"):
        table.add_column(col, overflow="fold")
    for s in record.steps.values():
        table.add_row(
            s.name,
            s.type,
            "cache hit" if s.cache_hit else s.status,
            _short_time(s.started_at),
            "" if s.duration_s is None else f"{s.duration_s:.1f}s",
            str(s.attempts),
            ", ".join(f"{k}={v:.4g}" for k, v in sorted(s.metrics.items())) or key_metric(s),
            escape(s.failure_reason.strip().splitlines()[-1]) if (s.failure_reason or "").strip() else "",
            "\n".join(s.log_paths),
        )
    console.print(table)
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    rows = Home.open(args.home).model_packages(group=args.group, status=args.status)
    if args.format == "json":
        _print_json(rows)
        return 0
    table = Table(title="local model registry", title_justify="left")
    for col in ("group", "version", "status", "metrics", "model data", "execution", "created"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["group_name"],
            str(r["version"]),
            r["approval_status"],
            _metrics_summary(r["metrics"] or {}),
            r["model_data_url"] or "",
            r["execution_id"] or "",
            _short_time(r["created_at"]),
        )
    _console().print(table)
    return 0


def _metrics_summary(metrics: dict[str, Any]) -> str:
    """Flatten SageMaker's ``{"metric": {"value": v}}`` report shape into ``metric=v`` pairs."""
    out = []
    for entry in metrics.values():
        content = entry.get("Content") if isinstance(entry, dict) else None
        if not isinstance(content, dict):
            continue
        for section in content.values():
            if isinstance(section, dict):
                for name, val in section.items():
                    value = val.get("value") if isinstance(val, dict) else val
                    if isinstance(value, int | float):
                        out.append(f"{name}={value:.4g}")
    return ", ".join(out)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="mlops")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MlopsError as err:
        Console(stderr=True).print(f"[red]error: {escape(str(err))}[/]", highlight=False, soft_wrap=True)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
