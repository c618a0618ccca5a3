"""``mlops models list|show|approve|reject`` for the local registry (default) or SageMaker's (``--target aws``).

``register(models_subparsers)`` adds the four commands under ``mlops models``; ``mlops.cli.run``
calls it. Approving locally records the state change event and, when the deploy rule's pattern matches it,
runs the local deploy with live progress (``--no-deploy`` skips it).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlops.registry import STATUSES

LOCAL, AWS = "local", "aws"


def register(msub: argparse._SubParsersAction) -> None:
    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--target", choices=[LOCAL, AWS], default=LOCAL, help="registry: local (default) or aws"
        )
        p.add_argument(
            "--env",
            default=os.environ.get("MLOPS_ENV"),
            help="config environment: region for --target aws, ports and smoke test for the local deploy "
            "(default: $MLOPS_ENV, else 'local')",
        )
        p.add_argument("--home", type=Path, help="local home (default: $MLOPS_HOME or <repo>/.mlops)")
        p.set_defaults(func=handler)
        return p

    p = add("list", cmd_list, "model package versions and their approval status")
    p.add_argument("--group", help="only this model package group")
    p.add_argument("--status", choices=list(STATUSES), help="only this approval status")
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = add("show", cmd_show, "one version: metrics, lineage, code bundles, audit trail, deployments")
    _version_args(p)
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = add("approve", cmd_approve, "approve a version (locally this starts the local deploy)")
    _version_args(p)
    _change_args(p)
    p.add_argument("--force", action="store_true", help="approve a version that was Rejected")
    p.add_argument("--no-deploy", action="store_true", help="record the approval only (local target)")
    p.add_argument("--stage", choices=["staging", "production"], default="production",
                   help="how far the local deploy goes (default: production)")  # fmt: skip

    p = add("reject", cmd_reject, "reject a version")
    _version_args(p)
    _change_args(p)


def _version_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", metavar="VERSION", help="GROUP/N, N with --group, or the model package ARN")
    p.add_argument("--group", help="model package group for a bare version number")


def _change_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, help="why (kept in the audit trail / ApprovalDescription)")
    p.add_argument("--by", default=None, help="who decides (default: the current user)")


# ------------------------------------------------------------------------------------------------ plumbing


def _config(args: argparse.Namespace):
    from mlops.config import load_config

    return load_config(args.env or "local")


def _registry(args: argparse.Namespace):
    if args.target == AWS:
        from mlops.aws.session import Aws
        from mlops.registry.aws import AwsRegistry

        return AwsRegistry(Aws.from_config(_config(args)))
    from mlops.local.state.home import Home
    from mlops.registry.local import LocalRegistry

    return LocalRegistry(Home.open(args.home))


def _actor(args: argparse.Namespace) -> str:
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER, e.g. in a bare container
        return f"uid-{os.getuid()}"


def _console() -> Console:
    console = Console(highlight=False)
    return console if console.is_terminal else Console(width=200, highlight=False)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _short(iso: Any) -> str:
    return str(iso or "")[:19].replace("T", " ")


# ------------------------------------------------------------------------------------------------ commands


def cmd_list(args: argparse.Namespace) -> int:
    if args.target == LOCAL:
        from mlops.cli.run import cmd_models_list

        return cmd_models_list(args)
    rows = _registry(args).list(group=args.group, status=args.status)
    if args.format == "json":
        _print_json(rows)
        return 0
    table = Table(title=f"SageMaker model registry ({_config(args).aws.region})", title_justify="left")
    for col in ("group", "version", "status", "arn", "created"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            r["group_name"], str(r["version"]), r["approval_status"], r["arn"], _short(r["created_at"])
        )
    _console().print(table)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from mlops.cli.run import _metrics_summary

    doc = _registry(args).show(args.version, group=args.group)
    if args.format == "json":
        _print_json(doc)
        return 0
    console = _console()
    lineage = doc.get("lineage") or {}
    console.print(
        f"[bold]{escape(doc['group_name'])}/{doc['version']}[/]  {doc['approval_status']}  "
        f"created {_short(doc['created_at'])}\narn         {doc['arn']}\n"
        f"model data  {doc.get('model_data_url') or ''}\n"
        f"metrics     {_metrics_summary(doc.get('metrics') or {}) or '-'}\n"
        f"execution   {lineage.get('execution_id') or '-'}"
        + (f" ({lineage.get('pipeline_name')}, {lineage.get('execution_status')})" if lineage.get("pipeline_name") else "")
        + f"\ninput data  {lineage.get('input_data_uri') or '-'}\ntest split  {lineage.get('test_data_uri') or '-'}",
        soft_wrap=True,
    )  # fmt: skip
    bundles = lineage.get("code_bundles") or {}
    if bundles:
        table = Table(title="code bundles", title_justify="left")
        table.add_column("bundle")
        table.add_column("sha256")
        for name, digest in sorted(bundles.items()):
            table.add_row(name, digest)
        console.print(table)
    table = Table(title="audit trail", title_justify="left")
    for col in ("when", "who", "action", "from", "to", "reason"):
        table.add_column(col, overflow="fold")
    for a in doc.get("audit_trail") or []:
        table.add_row(_short(a["at"]), escape(a["actor"] or ""), a["action"], a["from_status"] or "",
                      a["to_status"] or "", escape(a["reason"] or ""))  # fmt: skip
    console.print(table)
    if args.target == LOCAL:
        table = Table(title="deployments", title_justify="left")
        for col in ("id", "started", "stage", "status", "reason"):
            table.add_column(col, overflow="fold")
        for d in doc.get("deployments") or []:
            table.add_row(
                d["id"], _short(d["started_at"]), d["target_stage"], d["status"], escape(d["reason"] or "")
            )
        console.print(table)
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    change = _registry(args).reject(args.version, args.reason, actor=_actor(args), group=args.group)
    _console().print(change.message if change.changed else f"[yellow]{escape(change.message)}[/]")
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    console = _console()
    registry = _registry(args)
    change = registry.approve(
        args.version, args.reason, actor=_actor(args), force=args.force, group=args.group
    )
    if not change.changed:
        console.print(f"[yellow]{escape(change.message)}[/]")
        return 0
    console.print(f"[green]{escape(change.message)}[/]")
    if args.target == AWS:
        cfg = _config(args)
        console.print(
            f"SageMaker emits the state change event; the EventBridge rule starts {cfg.project.deploy_pipeline}"
        )
        return 0
    return _deploy_after_approval(args, registry, change, console)


def _deploy_after_approval(args: argparse.Namespace, registry, change, console: Console) -> int:
    from mlops.aws.events import approval_event_pattern, matches
    from mlops.local.approved_deploy import SUCCEEDED, deploy_model_package

    console.print(
        f"recorded event: {change.event['detail-type']} ({change.event['detail']['ModelPackageArn']})"
    )
    if args.no_deploy:
        console.print("deploy skipped (--no-deploy)")
        return 0
    cfg = _config(args)
    group = cfg.registry.model_package_group
    if not matches(approval_event_pattern(group), change.event):
        console.print(f"the deploy rule listens to group {group!r} only: nothing deployed")
        return 0

    with console.status("deploying …") as status:

        def progress(step: str, state: str, message: str) -> None:
            if state == "Executing":
                status.update(f"{step} …")
                return
            colour = "green" if state == "Succeeded" else "red"
            console.print(f"  {step}: [{colour}]{state}[/] {escape(message)}", soft_wrap=True)

        record = deploy_model_package(
            change.package, home=registry.home, cfg=cfg, target_stage=args.stage, on_progress=progress
        )
    if record.status == SUCCEEDED:
        console.print(f"[green]deployment {record.id} Succeeded[/]: " + ", ".join(
            f"{name} {url}" for name, url in record.endpoints.items()))  # fmt: skip
        return 0
    console.print(f"[red]deployment {record.id} {record.status}: {escape(record.reason)}[/]", soft_wrap=True)
    return 1
