"""``mlops run``: a pipeline definition executed on this machine (no Docker, no AWS)."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from mlops.cli.console import escape, out
from mlops.cli.invocation import Invocation, add_env, add_home
from mlops.errors import DefinitionError


def register(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser(
        "run",
        help="run a pipeline locally (no Docker, no AWS)",
        description="Run a compiled pipeline of the project (--env) or any pipeline definition JSON "
        "(--definition) on this machine.",
    )
    source = run.add_mutually_exclusive_group()
    add_env(source)
    source.add_argument(
        "--definition", type=Path, metavar="FILE.json", help="pipeline definition JSON to run"
    )
    run.add_argument(
        "--pipeline",
        help="which compiled pipeline of the project to run (default: the project's default pipeline; "
        "a deploy pipeline needs --param ModelPackageArn=... of an Approved version; parameters the "
        "project resolves at start, such as batch scoring's latest Approved version, unless given)",
    )
    run.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="override a parameter"
    )
    run.add_argument("--resume", metavar="EXECUTION_ID", help="re-run only what failed or never ran")
    run.add_argument("--no-cache", action="store_true", help="ignore CacheConfig: run every step")
    run.add_argument("--max-parallel", type=int, metavar="N", help="steps at once (default: config or cores)")
    run.add_argument("--logs", action="store_true", help="print job log lines (terminal: above the table)")
    run.add_argument("--name", help="pipeline name to record (default: from config or the file name)")
    run.add_argument(
        "--check", nargs="?", const=True, default=None, metavar="FILE.json",
        help="run nothing: list every step with its image and the local runtime and environment that will "
        "serve it, and every blocker at once; exit 1 when something cannot run (the definition: FILE.json, "
        "--definition or the project's compile)",
    )  # fmt: skip
    run.add_argument("--json", action="store_true", help="with --check: print the check as JSON")
    run.add_argument(
        "--images", type=Path, metavar="FILE.yaml",
        help="which environment stands in for which image, as config local.images writes it (pattern: "
        "project | /path/to/python | [requirements] | {python, requirements}); ahead of the project's own",
    )  # fmt: skip
    run.add_argument(
        "--lambda-functions", type=Path, metavar="FILE.yaml",
        help="which local handler serves which Lambda step's function, as config local.lambda_functions "
        "writes it (FunctionArn or name: package.module:function | path/to/file.py:function, a path "
        "relative to the file); ahead of the project's own",
    )  # fmt: skip
    add_home(run)
    run.set_defaults(func=cmd_run)


def prepare_project_run(args: Invocation, key: str, console) -> dict[str, Any]:
    """Compile the project, put its code bundles and any missing seed data into the store.

    Returns the RunOptions fields and the definition that depend on the project's config.
    """
    from mlops.compile.compiler import compile_cached
    from mlops.local.s3store import S3Store

    project, cfg, home = args.project, args.config, args.local_home
    console.print(f"compiling {args.environment} …", highlight=False)
    compiled = compile_cached(project, cfg)
    store = S3Store(home.s3_root)
    for bundle in compiled.bundles:
        store.put_tree(bundle.s3_uri, bundle.source)
    seeds = project.declaration.seed_data(cfg) if project.declaration.seed_data else {}
    for prefix, seeder in seeds.items():
        prefix = prefix.rstrip("/") + "/"
        if store.list(prefix):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            rows = seeder(Path(tmp))
            store.put_tree(prefix, Path(tmp))
        console.print(f"seeded {rows if rows is not None else 'the'} rows into {prefix}", highlight=False)
    return {
        "definition": compiled.definition(key),
        "pipeline_name": compiled.pipeline_names.get(key),
        "file_systems": dict(cfg.local.file_systems),
        "images": dict(cfg.local.images),
        "max_parallel": cfg.local.max_parallel_steps,
        "endpoint_ports": project.declaration.endpoint_ports(cfg),
        **local_functions(args),
    }


def local_functions(args: Invocation) -> dict[str, Any]:
    """The project config's Lambda handlers (paths against the project root) and callback timeout."""
    from mlops.local.handlers.lambda_step import resolve_paths

    if args.optional_project is None:
        return {"lambda_functions": {}}
    local = args.config.local
    return {
        "lambda_functions": resolve_paths(local.lambda_functions, args.project.root),
        "callback_timeout_s": local.callback_timeout_s,
    }


def read_lambda_functions(path: Path) -> dict[str, str]:
    """``--lambda-functions FILE``: a mapping in config ``local.lambda_functions``'s form."""
    import yaml

    from mlops.config import LambdaConfigError, check_functions
    from mlops.local.handlers.lambda_step import resolve_paths

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DefinitionError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise DefinitionError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DefinitionError(
            f"{path}: expected a mapping of function ARNs (as config local.lambda_functions)"
        )
    try:
        check_functions(data)
    except LambdaConfigError as err:
        raise DefinitionError(f"{path}: {err}") from None
    return resolve_paths(data, path.resolve().parent)


def read_definition(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DefinitionError(f"{path}: file not found") from None
    except RecursionError:
        raise DefinitionError(f"{path}: nested too deeply to be a pipeline definition") from None
    except ValueError as err:
        raise DefinitionError(f"{path}: not valid JSON ({str(err)[:120]})") from None
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected a JSON object (a pipeline definition)")
    return data


def read_images(path: Path) -> dict[str, Any]:
    """``--images FILE``: a mapping in config ``local.images``'s form, checked as the config is."""
    import yaml

    from mlops.local.images.environments import ImageEnvError, rules_from_config

    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DefinitionError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise DefinitionError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise DefinitionError(f"{path}: expected a mapping of image patterns (as config local.images)")
    try:
        rules_from_config(data)
    except ImageEnvError as err:
        raise DefinitionError(f"{path}: {err}") from None
    return data


def cmd_run(args: Invocation) -> int:
    from mlops.cli.progress import RunProgress
    from mlops.definition.parameters import parse_assignments
    from mlops.local.options import RunOptions
    from mlops.local.scheduler import refuse_params_on_resume, run_definition

    console = out()
    params = parse_assignments(args.param)
    refuse_params_on_resume(args.resume, params)  # before compiling anything
    if isinstance(args.check, str):
        if args.definition or args.env:
            raise DefinitionError("--check FILE.json names the definition: give no --definition or --env")
        args.definition = Path(args.check)
    extra_images = read_images(args.images) if args.images else {}
    if args.definition:
        settings: dict[str, Any] = {
            "definition": read_definition(args.definition),
            "pipeline_name": args.definition.stem,
            # inside a project its image table applies to any definition, as to its own
            "images": dict(args.config.local.images) if args.optional_project else {},
            **local_functions(args),
        }
    else:
        key = args.pipeline or args.project.declaration.default_pipeline
        if not args.resume and not args.check:  # a resumed execution keeps its own parameters
            from mlops.registry.local import LocalRegistry

            params = args.project.start_parameters(args.config, key, params, LocalRegistry(args.local_home))
        settings = prepare_project_run(args, key, console)
    settings["images"] = {**extra_images, **settings["images"]}  # the file's rules match first
    if args.lambda_functions:
        settings["lambda_functions"] = {
            **settings["lambda_functions"],
            **read_lambda_functions(args.lambda_functions),
        }
    definition = settings.pop("definition")
    from mlops.local.source import git_source

    settings["source"] = git_source(args.definition.resolve().parent if args.definition else args.project.root)
    if args.name:
        settings["pipeline_name"] = args.name
    if args.max_parallel:
        settings["max_parallel"] = args.max_parallel
    if args.check:
        return report_check(
            definition, console, as_json=args.json, images=settings["images"],
            lambda_functions=settings["lambda_functions"],
        )  # fmt: skip
    options = RunOptions(params=params, resume=args.resume, use_cache=not args.no_cache, **settings)
    with RunProgress(console, show_logs=args.logs) as progress:
        record = run_definition(definition, home=args.local_home, options=options, on_event=progress)
    from mlops.cli.tracking import log_run

    log_run(args, record.id)  # config tracking.mlflow.enabled: a failure to log is a warning
    if record.status == "Succeeded":
        console.print(f"[green]execution {record.id} Succeeded[/]")
        write_run_report(args.local_home, record.id, console)
        return 0
    reason = (record.failure_reason or record.status).strip().splitlines()
    line = f"execution {record.id} {record.status}: {reason[-1] if reason else ''}"
    console.print(f"[red]{escape(line)}[/]")
    write_run_report(args.local_home, record.id, console)
    if record.status == "Failed":
        console.print(f"resume with: mlops run --resume {record.id}")
    return 130 if record.status == "Stopped" else 1


def write_run_report(home, execution_id: str, console) -> None:
    """The execution's report (``mlops report``), its path printed; a report that cannot be written is a
    warning, never the run's failure."""
    from mlops.local.report.render import write_report

    try:
        written = write_report(home, execution_id, progress=console.print)
    except Exception as err:  # noqa: BLE001 - the run is recorded; its report is a view of it
        console.print(f"[yellow]warning: no report for {execution_id}: {escape(str(err))}[/]")
        return
    for line in written.warnings:
        console.print(f"[yellow]warning: {escape(line)}[/]")
    console.print(f"report: {escape(str(written.path))}", soft_wrap=True)


def report_check(
    definition: dict[str, Any],
    console,
    *,
    as_json: bool,
    images: dict[str, Any] | None = None,
    lambda_functions: dict[str, str] | None = None,
) -> int:
    """``mlops run --check``: what would serve each step, and every blocker; exit 1 if any."""
    from rich.table import Table

    from mlops.cli.console import print_json
    from mlops.local.check import check

    result = check(definition, images, lambda_functions=lambda_functions)
    if as_json:
        print_json({"runnable": result.runnable, "blockers": result.blockers,
                    "steps": [v.to_json() for v in result.steps]})  # fmt: skip
        return 0 if result.runnable else 1
    if result.steps:
        table = Table("step", "type", "image", "runtime", "environment", box=None, pad_edge=False)
        for v in result.steps:
            mark = "[red]✗[/] " if v.blockers else ""
            table.add_row(mark + escape(v.name), escape(v.type), escape(v.image or "-"),
                          escape(v.runtime or "-"), escape(v.environment or "-"))  # fmt: skip
        console.print(table)
    if result.runnable:
        console.print(f"[green]ready: {len(result.steps)} step(s) can run on this machine[/]")
        return 0
    console.print(f"[red]{len(result.blockers)} blocker(s):[/]")
    for line in result.blockers:
        console.print(f"  [red]-[/] {escape(line)}")
    return 1
