"""``mlops models list|show|compare|approve|reject|promote|verify``: the local registry (default) or SageMaker's (``--target aws``).

Approving locally records the state change event and, when the deploy rule's pattern matches it, runs the
project's deploy pipeline through the local executor with live progress (``--no-deploy`` skips it).
Rejecting a version that serves on a local endpoint is refused unless ``--undeploy`` stops those endpoints.
``promote`` answers the deploy pipeline's promotion gate (a Callback step between staging and production)
for one version: locally the local callback queue, on AWS the gate's SQS message and SageMaker's
SendPipelineExecutionStep* calls. ``verify`` walks the local audit trail's hash chain: exit 0 when intact, 1 with the first broken row.
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from typing import Any

from rich.table import Table

from mlops.cli.console import err, escape, out, print_json, short_time
from mlops.cli.invocation import Invocation, add_env, add_format, add_home
from mlops.registry import STATUSES, ApprovalError

LOCAL, AWS = "local", "aws"


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="the model registry: local, or SageMaker's with --target aws")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[Invocation], int], help_text: str) -> argparse.ArgumentParser:
        p = msub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--target", choices=[LOCAL, AWS], default=LOCAL, help="registry: local (default) or aws"
        )
        add_env(p)
        add_home(p)
        p.set_defaults(func=handler)
        return p

    p = add("list", cmd_list, "model package versions and their approval status")
    p.add_argument("--group", help="only this model package group")
    p.add_argument("--status", choices=list(STATUSES), help="only this approval status")
    add_format(p)

    p = add("show", cmd_show, "one version: metrics, lineage, code bundles, audit trail, deployments")
    _version_args(p)
    add_format(p)

    p = add("compare", cmd_compare, "two versions side by side: metrics (B - A) and what code, data or "
            "parameters changed")  # fmt: skip
    p.add_argument("a", metavar="A", help="the version compared from: GROUP/N, N with --group, or an ARN")
    p.add_argument("b", metavar="B", help="the version compared to (differences are B - A)")
    p.add_argument("--group", help="model package group for bare version numbers")
    add_format(p)

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
    p.add_argument("--undeploy", action="store_true",
                   help="stop the local endpoints that serve this version (local target)")  # fmt: skip

    p = add(
        "promote",
        cmd_promote,
        "answer the deploy's promotion gate: the version on staging goes on to production (or --reject)",
    )
    _version_args(p)
    _change_args(p)
    p.add_argument(
        "--reject",
        action="store_true",
        help="fail the gate instead: production stays as it is, staging keeps serving",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=20.0,
        metavar="S",
        help="with --target aws: how long to look for the gate's message on its queue (default: 20)",
    )

    p = msub.add_parser("verify", help="check the local audit trail's hash chain",
                        description="check the local audit trail's hash chain (exit 1 at the first broken row)")  # fmt: skip
    add_env(p)
    add_home(p)
    add_format(p)
    p.set_defaults(func=cmd_verify, target=LOCAL)


def _version_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("version", metavar="VERSION", help="GROUP/N, N with --group, or the model package ARN")
    p.add_argument("--group", help="model package group for a bare version number")


def _change_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True, help="why (kept in the audit trail / ApprovalDescription)")
    p.add_argument("--by", default=None, help="who decides (default: the current user)")


def _registry(args: Invocation):
    if args.target == AWS:
        from mlops.aws.session import Aws
        from mlops.registry.aws import AwsRegistry

        return AwsRegistry(Aws.from_config(args.config))
    from mlops.registry.local import LocalRegistry

    return LocalRegistry(args.local_home)


def _actor(args: Invocation) -> str:
    if args.by:
        return args.by
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER, e.g. in a bare container
        return f"uid-{os.getuid()}"


def metrics_summary(metrics: dict[str, Any]) -> str:
    """Flatten SageMaker's ``{"metric": {"value": v}}`` report shape into ``metric=v`` pairs."""
    pairs = []
    for entry in metrics.values():
        content = entry.get("Content") if isinstance(entry, dict) else None
        if not isinstance(content, dict):
            continue
        for section in content.values():
            if isinstance(section, dict):
                for name, val in section.items():
                    value = val.get("value") if isinstance(val, dict) else val
                    if isinstance(value, int | float):
                        pairs.append(f"{name}={value:.4g}")
    return ", ".join(pairs)


# ------------------------------------------------------------------------------------------------ commands


def cmd_list(args: Invocation) -> int:
    rows = _registry(args).list(group=args.group, status=args.status)
    if args.format == "json":
        print_json(rows)
        return 0
    if args.target == LOCAL:
        table = Table(title="local model registry", title_justify="left")
        for col in ("group", "version", "status", "metrics", "model data", "execution", "created"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                r["group_name"], str(r["version"]), r["approval_status"], metrics_summary(r["metrics"] or {}),
                r["model_data_url"] or "", r["execution_id"] or "", short_time(r["created_at"]),
            )  # fmt: skip
    else:
        table = Table(title=f"SageMaker model registry ({args.config.aws.region})", title_justify="left")
        for col in ("group", "version", "status", "arn", "created"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                r["group_name"],
                str(r["version"]),
                r["approval_status"],
                r["arn"],
                short_time(r["created_at"]),
            )
    out().print(table)
    return 0


def cmd_show(args: Invocation) -> int:
    doc = _registry(args).show(args.version, group=args.group)
    if args.format == "json":
        print_json(doc)
        return 0
    console = out()
    lineage = doc.get("lineage") or {}
    console.print(
        f"[bold]{escape(doc['group_name'])}/{doc['version']}[/]  {doc['approval_status']}  "
        f"created {short_time(doc['created_at'])}\narn         {doc['arn']}\n"
        f"model data  {doc.get('model_data_url') or ''}\n"
        f"metrics     {metrics_summary(doc.get('metrics') or {}) or '-'}\n"
        f"execution   {lineage.get('execution_id') or '-'}"
        + (f" ({lineage.get('pipeline_name')}, {lineage.get('execution_status')})" if lineage.get("pipeline_name") else "")
        + f"\ninput data  {lineage.get('input_data_uri') or '-'}"
        + "".join(f"\n  {name:<20} {uri}" for name, uri in sorted((lineage.get("data_outputs") or {}).items())),
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
        table.add_row(short_time(a["at"]), escape(a["actor"] or ""), a["action"], a["from_status"] or "",
                      a["to_status"] or "", escape(a["reason"] or ""))  # fmt: skip
    console.print(table)
    if args.target == LOCAL:
        table = Table(title="deployments", title_justify="left")
        for col in ("id", "started", "stage", "status", "reason"):
            table.add_column(col, overflow="fold")
        for d in doc.get("deployments") or []:
            table.add_row(
                d["id"],
                short_time(d["started_at"]),
                d["target_stage"],
                d["status"],
                escape(d["reason"] or ""),
            )
        console.print(table)
    return 0


def _cell(value: Any, width: int = 0) -> str:
    """A value for a table cell: a sha256 or git commit as its first 12 digits, a long URI or text as
    its tail."""
    if value is None:
        return "-"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text):
        return text[:12]
    return "…" + text[-(width - 1) :] if width and len(text) > width else text


def cmd_compare(args: Invocation) -> int:
    if args.target == AWS:
        raise ApprovalError(
            "models compare: SageMaker's registry keeps no lineage to compare; compare local versions "
            "(without --target aws)"
        )
    from mlops.registry.compare import CHANGED, NOT_RECORDED, SAME, compare

    result = compare(_registry(args), args.a, args.b, group=args.group)
    if args.format == "json":
        print_json(result)
        return 0
    console = out()
    a, b = result["a"]["version"], result["b"]["version"]
    console.print(f"[bold]A[/] {escape(a)} ({result['a']['approval_status']})   "
                  f"[bold]B[/] {escape(b)} ({result['b']['approval_status']})", soft_wrap=True)  # fmt: skip
    table = Table(title="metrics", title_justify="left")
    for col in ("metric", "A", "B", "B - A"):
        table.add_column(
            col, no_wrap=True, overflow="ellipsis", justify="left" if col == "metric" else "right"
        )
    for m in result["metrics"]:
        diff = "-" if m["diff"] is None else f"{m['diff']:+.4g}"
        table.add_row(escape(m["metric"]), _cell(m["a"]), _cell(m["b"]), diff)
    console.print(table)
    table = Table(title="lineage (differences)", title_justify="left")
    # what (14) + name (16) + change (12) + borders and padding (16); A and B share the rest, at least 12 each
    side = max(12, (console.width - 58) // 2)
    for col, width in (("what", 14), ("name", 16), ("A", side), ("B", side), ("change", 12)):
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=width)
    differ = [row for row in result["lineage"] if row["change"] != SAME]
    for row in differ:
        style = "yellow" if row["change"] == CHANGED else "dim" if row["change"] == NOT_RECORDED else "cyan"
        table.add_row(escape(row["kind"]), escape(row["name"]), escape(_cell(row["a"], side)),
                      escape(_cell(row["b"], side)), f"[{style}]{row['change']}[/]")  # fmt: skip
    same = len(result["lineage"]) - len(differ)
    if differ:
        console.print(table)
        console.print(f"{same} unchanged; --format json for full values", soft_wrap=True)
    else:
        console.print(f"lineage: the same code, data, model artifact and parameters ({same} compared)")
    for note in result["notes"]:
        console.print(f"[dim]note: {escape(note)}[/]", soft_wrap=True)
    return 0


def cmd_reject(args: Invocation) -> int:
    registry = _registry(args)
    if args.target == AWS:
        if args.undeploy:
            raise ApprovalError("--undeploy stops local endpoints; it has no meaning with --target aws")
        change = registry.reject(args.version, args.reason, actor=_actor(args), group=args.group)
    else:
        change = registry.reject(
            args.version, args.reason, actor=_actor(args), group=args.group, undeploy=args.undeploy
        )
    console = out()
    for endpoint in change.extra.get("stopped", []):
        console.print(f"stopped endpoint {escape(endpoint)} (it served {escape(change.package['group_name'])}"
                      f"/{change.package['version']})")  # fmt: skip
    console.print(escape(change.message) if change.changed else f"[yellow]{escape(change.message)}[/]")
    return 0


def cmd_promote(args: Invocation) -> int:
    gate = args.project.declaration.promotion
    if gate is None:
        raise ApprovalError("the project's deploy pipeline has no promotion gate (Declaration.promotion)")
    console = out()
    registry = _registry(args)
    decision = "rejected" if args.reject else "promoted"
    if args.target == AWS:
        from mlops.aws.promotion import promote

        arn = registry.resolve_arn(args.version, args.group)
        execution = promote(
            registry.aws, gate, args.config, arn, actor=_actor(args), reason=args.reason, reject=args.reject,
            wait_s=args.wait,
        )  # fmt: skip
        console.print(f"[green]{decision}[/] {escape(arn)}: {gate.step} of {escape(execution)} answered")
        return 0
    from mlops.local.promotion import promote

    package = registry.get(args.version, args.group)
    result = promote(registry.home, gate, package, actor=_actor(args), reason=args.reason, reject=args.reject)
    version = f"{package['group_name']}/{package['version']}"
    after = "production stays as it is" if args.reject else "the deploy goes on to production"
    console.print(
        f"[green]{decision}[/] {escape(version)} at {gate.step} of execution {result.execution_id}: {after} "
        f"(mlops executions show {result.execution_id})"
    )
    return 0


def cmd_verify(args: Invocation) -> int:
    check = _registry(args).verify()
    if args.format == "json":
        print_json({"intact": check.intact, "rows": check.rows, "head": check.head, "broken": check.broken})
        return 0 if check.intact else 1
    if check.intact:
        out().print(f"audit trail intact: {check.rows} rows (head {check.head[:16]})")
        return 0
    b = check.broken
    version = f"{b['group_name']}/{b['version']}" if b["group_name"] else "-"
    err().print(
        f"[bold red]audit trail broken[/] at row id {b['id']} (version {escape(version)}): {escape(b['what'])}"
        f"; the {check.rows} rows before it are intact",
        soft_wrap=True,
    )
    return 1


def cmd_approve(args: Invocation) -> int:
    console = out()
    registry = _registry(args)
    change = registry.approve(
        args.version, args.reason, actor=_actor(args), force=args.force, group=args.group
    )
    if not change.changed:
        console.print(f"[yellow]{escape(change.message)}[/]")
        return 0
    console.print(f"[green]{escape(change.message)}[/]")
    if args.target == AWS:
        cfg = args.config
        console.print(
            f"SageMaker emits the state change event; the EventBridge rule starts {cfg.project.deploy_pipeline}"
        )
        return 0
    return _deploy_after_approval(args, registry, change, console)


def _deploy_after_approval(args: Invocation, registry, change, console) -> int:
    from mlops.aws.events import approval_event_pattern, matches
    from mlops.local.approved_deploy import SUCCEEDED, deploy_model_package

    console.print(
        f"recorded event: {change.event['detail-type']} ({change.event['detail']['ModelPackageArn']})"
    )
    if args.no_deploy:
        console.print("deploy skipped (--no-deploy)")
        return 0
    cfg = args.config
    group = cfg.registry.model_package_group
    if not matches(approval_event_pattern(group), change.event):
        console.print(f"the deploy rule listens to group {group!r} only: nothing deployed")
        return 0

    with console.status("deploying …") as status:
        gate = args.project.declaration.promotion
        version = f"{change.package['group_name']}/{change.package['version']}"

        def progress(step: str, state: str, message: str) -> None:
            if state == "Executing" and gate is not None and step == gate.step:
                console.print(f"  {step}: waiting for a person: mlops models promote {escape(version)} "
                              "--reason R (or --reject)")  # fmt: skip
                status.update(f"{step}: waiting for mlops models promote …")
                return
            if state == "Executing":
                status.update(f"{step} …")
                return
            colour = "green" if state == "Succeeded" else "red"
            console.print(f"  {step}: [{colour}]{state}[/] {escape(message)}")

        record = deploy_model_package(
            change.package, home=registry.home, project=args.project, cfg=cfg, target_stage=args.stage,
            on_progress=progress,
        )  # fmt: skip
    if record.status == SUCCEEDED:
        console.print(f"[green]deployment {record.id} Succeeded[/]: " + ", ".join(
            f"{name} {url}" for name, url in record.endpoints.items()))  # fmt: skip
        return 0
    console.print(f"[red]deployment {record.id} {record.status}: {escape(record.reason)}[/]")
    return 1
