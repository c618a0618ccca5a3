"""mlops: validate, compile, graph and run the pipelines; manage models, endpoints and AWS.

Errors become one red line and an exit code (``--debug`` shows the traceback). Commands owned by other
packages (local executor, serving, AWS control plane) plug in through their ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import time
from pathlib import Path

from mlops.errors import MlopsError

PLUGINS = (
    "mlops.cli.run",
    "mlops.cli.endpoints",
    "mlops.cli.aws",
)


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def add_env(parser: argparse.ArgumentParser, default: str | None = "local") -> None:
    parser.add_argument(
        "--env", default=default, help="config environment: config/<env>.yaml (default: %(default)s)"
    )


def _load(env: str):
    from mlops.config import load_config

    return load_config(env)


def _compile(env: str, status=None):
    from mlops.compile.compiler import compile_pipelines

    cfg = _load(env)
    started = time.perf_counter()
    if status:
        status.update(f"compiling {cfg.project.build_pipeline} ({env}) with the SageMaker SDK ...")
    compiled = compile_pipelines(cfg)
    return cfg, compiled, time.perf_counter() - started


# ------------------------------------------------------------------------------------------------ compile
def cmd_compile(args) -> int:
    from mlops.compile.compiler import write_outputs

    out = console()
    with out.status("loading config ...") as status:
        cfg, compiled, seconds = _compile(args.env, status)
        written = write_outputs(compiled, Path(args.out))
    for path in written:
        out.print(f"wrote {path}")
    out.print(
        f"[green]compiled[/] {len(compiled.definitions)} pipeline(s), {len(compiled.bundles)} code bundle(s) in {seconds:.1f}s"
    )
    return 0


def cmd_validate(args) -> int:
    from mlops.definition.validate import validate_definition

    out = console()
    with out.status("loading config ...") as status:
        cfg, compiled, _ = _compile(args.env, status)
        status.update("checking the definitions against botocore's service model ...")
        results = {key: validate_definition(compiled.definition(key)) for key in compiled.definitions}
    problems = 0
    for key, findings in results.items():
        if findings:
            problems += len(findings)
            for f in findings:
                out.print(f"[red]{key}: {f}[/]")
        else:
            steps = len(compiled.definition(key)["Steps"])
            out.print(
                f"[green]ok[/] {key}: config {args.env}, {steps} top-level steps, DAG acyclic, references resolve, requests valid"
            )
    return 1 if problems else 0


def cmd_graph(args) -> int:
    from mlops.definition.graph import mermaid, render_picture

    out = console()
    with out.status("loading config ...") as status:
        _, compiled, _ = _compile(args.env, status)
    definition = compiled.definition(args.pipeline)
    text = mermaid(definition)
    out.print(text, markup=False, end="")
    if args.out:
        dest = Path(args.out)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.with_suffix(".mmd").write_text(text)
        picture = render_picture(definition, dest)
        out.print(
            f"wrote {dest.with_suffix('.mmd')}"
            + (f" and {picture}" if picture else " (install graphviz for a picture)")
        )
    return 0


def cmd_config(args) -> int:
    out = console()
    if args.reference:
        from mlops.config import reference

        out.print("| key | type | default | description |\n| --- | --- | --- | --- |", markup=False)
        for key, kind, default, desc in reference():
            cells = [f"`{key}`", kind, default, desc]
            out.print("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |", markup=False)
        return 0
    cfg = _load(args.env)
    if args.format == "json":
        print(json.dumps(cfg.model_dump(mode="json"), indent=2, sort_keys=True))
    else:
        out.print(f"[green]ok[/] config/{args.env}.yaml (+ base.yaml, MLOPS__ overrides) is valid")
    return 0


# --------------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("compile", help="compile the pipeline definitions offline (deterministic)")
    add_env(p)
    p.add_argument("--out", default="build", help="output directory (default: %(default)s)")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("validate", help="check config, DAG, references and requests (botocore)")
    add_env(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("graph", help="print the DAG as Mermaid; --out also writes a picture")
    add_env(p)
    p.add_argument("--pipeline", default="model-build", choices=["model-build", "model-deploy"])
    p.add_argument("--out", help="picture path, e.g. build/model-build.svg (needs graphviz)")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("config", help="check the config of an environment, or print the reference")
    add_env(p)
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--reference", action="store_true", help="print the config reference as a Markdown table")
    p.set_defaults(func=cmd_config)

    for module in PLUGINS:
        try:
            plugin = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                continue  # that part of the project is not installed here
            raise
        plugin.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.debug else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.root.handlers:
        handler.setLevel(level)  # SDK modules set their own loggers to DEBUG: filter at the handler
    if not getattr(args, "func", None):
        if not argv:
            # A fresh clone's `mlops` runs the whole pipeline locally: the project's main job.
            args = (
                parser.parse_args(["run"]) if "run" in parser._subparsers._group_actions[0].choices else args
            )
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
    try:
        return int(args.func(args) or 0)
    except MlopsError as exc:
        if args.debug:
            raise
        from rich.markup import escape

        console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}")
        return exc.exit_code
    except KeyboardInterrupt:
        console(stderr=True).print("[yellow]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
