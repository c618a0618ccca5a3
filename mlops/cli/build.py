"""``mlops compile | validate | graph | config``: the offline half, from config to definition JSON."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mlops.cli.console import escape, out, print_json
from mlops.cli.invocation import Invocation, add_env, add_home


def compile_project(args: Invocation, status=None):
    """The project's definitions for ``args.environment``, compiled offline; returns (cfg, compiled, seconds)."""
    from mlops.compile.compiler import compile_pipelines

    cfg = args.config
    started = time.perf_counter()
    if status:
        status.update(f"compiling the pipelines of {args.environment} with the SageMaker SDK ...")
    compiled = compile_pipelines(args.project, cfg)
    return cfg, compiled, time.perf_counter() - started


def cmd_compile(args: Invocation) -> int:
    from mlops.compile.compiler import write_outputs

    console = out()
    with console.status("loading config ...") as status:
        _, compiled, seconds = compile_project(args, status)
        with compiled:  # the staged bundle files go once the tarballs are written
            written = write_outputs(compiled, Path(args.out))
    for path in written:
        console.print(f"wrote {path}")
    console.print(
        f"[green]compiled[/] {len(compiled.definitions)} pipeline(s), {len(compiled.bundles)} code bundle(s)"
        f" in {seconds:.1f}s"
    )
    return 0


def cmd_validate(args: Invocation) -> int:
    from mlops.definition.validate import validate_definition

    console = out()
    with console.status("loading config ...") as status:
        _, compiled, _ = compile_project(args, status)
        compiled.close()  # only the definitions are needed
        status.update("checking the definitions against botocore's service model ...")
        results = {key: validate_definition(compiled.definition(key)) for key in compiled.definitions}
    problems = 0
    for key, findings in results.items():
        problems += len(findings)
        for finding in findings:
            console.print(f"[red]{escape(f'{key}: {finding}')}[/]")
        if not findings:
            steps = len(compiled.definition(key)["Steps"])
            console.print(
                f"[green]ok[/] {key}: config {args.environment}, {steps} top-level steps, DAG acyclic, "
                "references resolve, requests valid"
            )
    return 1 if problems else 0


def cmd_graph(args: Invocation) -> int:
    from mlops.definition.graph import mermaid, render_picture

    console = out()
    statuses = cached = None
    if args.execution:  # the definition that execution ran, each step coloured by its status there
        home = args.local_home
        execution_id = home.runs.resolve(args.execution)
        definition = json.loads(home.runs.get(execution_id)["definition"])
        rows = home.runs.steps(execution_id)
        statuses = {r["name"]: r["status"] for r in rows}
        cached = {r["name"] for r in rows if r["cache_hit"]}
    else:
        with console.status("loading config ...") as status:
            _, compiled, _ = compile_project(args, status)
            compiled.close()  # only the definitions are needed
        definition = compiled.definition(args.pipeline or args.project.declaration.default_pipeline)
    text = mermaid(definition, statuses, cached or ())
    console.print(text, markup=False, end="")
    if args.out:
        dest = Path(args.out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.with_suffix(".mmd").write_text(text)
        picture = render_picture(definition, dest, statuses, cached or ())
        console.print(
            f"wrote {dest.with_suffix('.mmd')}"
            + (f" and {picture}" if picture else " (install graphviz for a picture)"),
            markup=False,
        )
    return 0


def cmd_config(args: Invocation) -> int:
    console = out()
    if args.reference:
        from mlops.config import reference

        console.print("| key | type | default | description |\n| --- | --- | --- | --- |", markup=False)
        for key, kind, default, desc in reference(args.project.declaration.config_schema):
            cells = [f"`{key}`", kind, default, desc]
            console.print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |", markup=False)
        return 0
    cfg = args.config
    _warn_placeholders(cfg, args.environment)
    if args.format == "json":
        print_json(cfg.model_dump(mode="json"))
    else:
        console.print(
            f"[green]ok[/] config/{args.environment}.yaml (+ base.yaml, MLOPS__ overrides) is valid"
        )
    return 0


def _warn_placeholders(cfg, environment: str) -> None:
    """A warning on stderr (the exit code stays 0) while the config still holds a placeholder account id."""
    from mlops.cli.console import err
    from mlops.config import placeholder_keys

    for account, keys in placeholder_keys(cfg).items():
        shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
        err().print(
            f"[yellow]warning:[/] config {environment} still holds the placeholder account id {account} "
            f"({shown}): put your AWS account id in config/{environment}.yaml",
            markup=True,
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compile", help="compile the pipeline definitions offline (deterministic)")
    add_env(p)
    p.add_argument("--out", default="build", help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("validate", help="check config, DAG, references and requests (botocore)")
    add_env(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("graph", help="print the DAG as Mermaid; --out also writes a picture")
    add_env(p)
    p.add_argument("--pipeline", help="pipeline key, e.g. model-deploy (default: the project's default)")
    p.add_argument("--out", help="picture path, e.g. build/model-build.svg (needs graphviz)")
    p.add_argument(
        "--execution", metavar="ID",
        help="the definition a local execution ran (id, unique prefix or 'latest'), steps coloured by status",
    )  # fmt: skip
    add_home(p)
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("config", help="check the config of an environment, or print the reference")
    add_env(p)
    p.add_argument("--format", choices=["text", "json"], default="text", help="output format")
    p.add_argument("--reference", action="store_true", help="print the config reference as a Markdown table")
    p.set_defaults(func=cmd_config)
