"""CLI: ``mlops upsert | start | status | wait | diff | infra render | bootstrap`` (wired in by mlops.cli.main)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mlops.cli.console import out as _console  # commands keep `out` for their own console
from mlops.cli.console import print_json
from mlops.cli.invocation import add_env


def _format_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["text", "json"], default="text", help="output format")


def _aws(cfg):
    from mlops.aws.session import Aws

    return Aws.from_config(cfg)


def _compile(args, status):
    """The compiled project; use it in a ``with`` block so that its staged bundle files are removed."""
    from mlops.cli.build import compile_project

    return compile_project(args, status)[1]


def _aws_for_arn(arn: str, args):
    """An execution ARN names its region; config is only needed when it does not parse."""
    from mlops.aws.session import Aws, check_region
    from mlops.errors import ParameterError

    parts = arn.split(":")
    if len(parts) < 6 or parts[2] != "sagemaker" or "/execution/" not in arn:
        raise ParameterError(
            f"{arn!r}: not a pipeline execution ARN (arn:aws:sagemaker:REGION:ACCOUNT:pipeline/NAME/execution/ID)"
        )
    region = parts[3] or args.config.aws.region
    check_region(region)
    return Aws(region)


# ------------------------------------------------------------------------------------------- handlers


def cmd_upsert(args) -> int:
    from mlops.aws.pipelines_api import upsert
    from mlops.aws.session import git_commit

    out = _console()
    cfg = args.config
    aws = _aws(cfg)
    with out.status("loading ...") as status:
        with _compile(args, status) as compiled:
            status.update(f"uploading {len(compiled.bundles)} code bundle(s) and upserting ...")
            uploads, results = upsert(
                aws,
                cfg,
                compiled.definitions,
                compiled.pipeline_names,
                compiled.bundles,
                commit=git_commit(args.project.root),
                on_progress=lambda msg: (
                    status.update(msg),
                    out.print(msg) if msg.startswith("uploaded") else None,
                ),
            )
    out.print(f"bundles: {len(uploads.uploaded)} file(s) uploaded, {uploads.present} already there")
    for r in results:
        word = {
            "unchanged": "[green]up to date[/]",
            "created": "[cyan]created[/]",
            "updated": "[yellow]updated[/]",
        }
        out.print(f"{r.name}: {word[r.action]}  {r.arn}")
    return 0


def _pipeline_name(args, key: str) -> str:
    """The SageMaker name of pipeline ``key``: from config, else from the (offline, cached) compile."""
    cfg, declaration = args.config, args.project.declaration
    if key == declaration.default_pipeline:
        return cfg.project.build_pipeline
    if key == declaration.deploy_pipeline:
        return cfg.project.deploy_pipeline
    from mlops.compile.compiler import compile_cached

    return compile_cached(args.project, cfg).pipeline_names[key]


def cmd_start(args) -> int:
    from mlops.aws.pipelines_api import start
    from mlops.definition.parameters import parse_assignments
    from mlops.registry.aws import AwsRegistry

    cfg = args.config
    key = args.pipeline or args.project.declaration.default_pipeline
    if key not in args.project.pipeline_keys():
        from mlops.errors import ParameterError

        raise ParameterError(
            f"--pipeline {key!r}: the project declares {', '.join(args.project.pipeline_keys())}"
        )
    name = _pipeline_name(args, key)
    aws = _aws(cfg)
    params = args.project.start_parameters(cfg, key, parse_assignments(args.param or []), AwsRegistry(aws))
    arn = start(aws, name, params, display_name=args.display_name)
    if args.format == "json":
        print_json({"pipeline": name, "execution_arn": arn})
    else:
        _console().print(f"started {name}: {arn}")
    return 0


def _state_table(state):
    from rich.table import Table

    colour = {"Succeeded": "green", "Failed": "red", "Stopped": "yellow", "Executing": "cyan"}
    table = Table(
        title=f"{state.pipeline}: [{colour.get(state.status, 'white')}]{state.status}[/]",
        title_justify="left",
    )
    for col in ("step", "type", "status", "started", "ended", "reason"):
        table.add_column(col)
    if state.steps is None:
        table.add_row(
            "(steps not listed by this endpoint)",
            "",
            state.status,
            _t(state.started),
            _t(state.ended),
            state.failure_reason,
        )
    for s in state.steps or []:
        table.add_row(
            s.name,
            s.kind,
            f"[{colour.get(s.status, 'white')}]{s.status}[/]",
            _t(s.started),
            _t(s.ended),
            s.reason,
        )
    return table


def _t(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def cmd_status(args) -> int:
    from mlops.aws.pipelines_api import status

    state = status(_aws_for_arn(args.execution_arn, args), args.execution_arn)
    if args.format == "json":
        print_json(state.as_dict())
    else:
        _console().print(_state_table(state))
    return 0


def cmd_wait(args) -> int:
    from rich.live import Live

    from mlops.aws.pipelines_api import wait

    out = _console()
    aws = _aws_for_arn(args.execution_arn, args)
    last: list[str] = []
    with Live(console=out, auto_refresh=False, transient=False) as live:

        def show(state):
            live.update(_state_table(state), refresh=True)
            summary = [state.status] + [f"{s.name}={s.status}" for s in state.steps or []]
            if not out.is_terminal and summary != last:  # CI logs: one line per change instead of redraws
                out.print(" ".join(summary))
                last[:] = summary

        state = wait(
            aws,
            args.execution_arn,
            show,
            first_delay_s=args.poll,
            max_delay_s=args.max_poll,
            timeout_s=args.timeout,
        )
    if args.format == "json":
        print_json(state.as_dict())
    return state.exit_code


def cmd_diff(args) -> int:
    from rich.text import Text

    from mlops.aws.pipelines_api import diff

    out = _console()
    cfg = args.config
    aws = _aws(cfg)
    with out.status("loading ...") as status:
        compiled = _compile(args, status)
        compiled.close()  # only the definitions are needed
        status.update("reading the deployed definitions ...")
        diffs = diff(aws, compiled.definitions, compiled.pipeline_names)
    if args.format == "json":
        print_json({d.name: d.lines for d in diffs})
    else:
        for d in diffs:
            if not d.changed:
                out.print(f"{d.name}: [green]no differences[/]")
                continue
            out.print(f"{d.name}: [yellow]{len(d.lines)} difference(s)[/] (deployed -> local)")
            for line in d.lines:
                style = {"+": "green", "-": "red", "~": "yellow"}.get(line.strip()[:1], "")
                out.print(Text(line, style=style))
    return 1 if any(d.changed for d in diffs) else 0


def _default_params_path(args) -> Path:
    return args.project.root / "build" / "infra" / f"{args.environment}.parameters.json"


def cmd_infra_render(args) -> int:
    from mlops.aws.infra import render_parameters, write_parameters

    cfg = args.config
    params = render_parameters(cfg, repo_url=args.repo_url, branch=args.branch, root=args.project.root)
    _warn_repository(params["RepositoryUrl"])
    path = write_parameters(params, Path(args.out) if args.out else _default_params_path(args))
    if args.format == "json":
        print_json({"path": str(path), "parameters": params})
        return 0
    from rich.table import Table

    table = Table(title=f"wrote {path}", title_justify="left")
    table.add_column("parameter")
    table.add_column("value")
    for k, v in sorted(params.items()):
        table.add_row(k, v)
    _console().print(table)
    return 0


def _warn_repository(url: str) -> None:
    from mlops.aws.infra import repository_warning
    from mlops.cli.console import err, escape

    warning = repository_warning(url)
    if warning:
        err().print(f"[yellow]warning:[/] {escape(warning)}")


def cmd_bootstrap(args) -> int:
    from mlops.aws.infra import bootstrap, render_parameters, stack_name, template_path

    out = _console()
    cfg = args.config
    if args.params:
        params = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(Path(args.params).read_text())}
    else:
        params = render_parameters(cfg, repo_url=args.repo_url, branch=args.branch, root=args.project.root)
    aws = _aws(cfg)

    def event(e):
        reason = f"  {e['ResourceStatusReason']}" if e.get("ResourceStatusReason") else ""
        style = (
            "red"
            if "FAILED" in e["ResourceStatus"]
            else "green"
            if e["ResourceStatus"].endswith("COMPLETE")
            else "cyan"
        )
        out.print(
            f"{_t(e.get('Timestamp'))}  {e['LogicalResourceId']:<28} {e.get('ResourceType', ''):<28} [{style}]{e['ResourceStatus']}[/]{reason}"
        )

    out.print(f"deploying stack {stack_name(cfg)} in {cfg.aws.region} ...")
    result = bootstrap(aws, cfg, params, template_path(args.project.root), on_event=event, poll_s=args.poll)
    if result.action == "unchanged":
        out.print(f"stack {result.stack}: [green]up to date[/] ({result.status})")
    else:
        out.print(f"stack {result.stack}: [green]{result.action}[/] ({result.status})")
    for k, v in sorted(result.outputs.items()):
        out.print(f"  {k} = {v}")
    return 0


# ------------------------------------------------------------------------------------------- register


def register(subparsers) -> None:
    p = subparsers.add_parser("upsert", help="upload code bundles, create or update the SageMaker pipelines")
    add_env(p)
    p.set_defaults(func=cmd_upsert)

    p = subparsers.add_parser("start", help="start a pipeline execution on SageMaker")
    add_env(p)
    p.add_argument("--pipeline", help="pipeline key (default: the project's default pipeline)")
    p.add_argument("--param", action="append", metavar="K=V", help="pipeline parameter (repeatable)")
    p.add_argument("--display-name", help="execution display name")
    _format_arg(p)
    p.set_defaults(func=cmd_start)

    p = subparsers.add_parser("status", help="show an execution and its steps")
    p.add_argument("execution_arn", help="PipelineExecutionArn (mlops start prints it)")
    add_env(p)
    _format_arg(p)
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("wait", help="wait for an execution to end; exit code from its final status")
    p.add_argument("execution_arn", help="PipelineExecutionArn (mlops start prints it)")
    add_env(p)
    p.add_argument("--poll", type=float, default=10.0, help="first poll interval, seconds (doubles)")
    p.add_argument("--max-poll", type=float, default=60.0, help="longest poll interval, seconds")
    p.add_argument("--timeout", type=float, help="give up after this many seconds (exit 1)")
    _format_arg(p)
    p.set_defaults(func=cmd_wait)

    p = subparsers.add_parser(
        "diff", help="deployed definitions vs the local compile; exit 1 when they differ"
    )
    add_env(p)
    _format_arg(p)
    p.set_defaults(func=cmd_diff)

    infra = subparsers.add_parser("infra", help="infrastructure (CloudFormation) of an environment")
    infra_sub = infra.add_subparsers(dest="infra_command", metavar="COMMAND", required=True)
    p = infra_sub.add_parser("render", help="write the stack parameters rendered from config")
    add_env(p)
    p.add_argument("--out", help="parameters JSON (default: build/infra/<env>.parameters.json)")
    p.add_argument("--repo-url", help="git repository CodeBuild builds (default: the origin remote)")
    p.add_argument("--branch", default="main", help="branch whose pushes build (default: %(default)s)")
    _format_arg(p)
    p.set_defaults(func=cmd_infra_render)

    p = subparsers.add_parser("bootstrap", help="deploy infra/mlops.yaml (change set, events as progress)")
    add_env(p)
    p.add_argument("--params", help="parameters JSON from `mlops infra render` (default: render now)")
    p.add_argument("--repo-url", help="git repository CodeBuild builds (default: the origin remote)")
    p.add_argument("--branch", default="main", help="branch whose pushes build (default: %(default)s)")
    p.add_argument("--poll", type=float, default=5.0, help="seconds between stack event reads")
    p.set_defaults(func=cmd_bootstrap)
