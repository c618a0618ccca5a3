"""CLI: ``mlops buildspec run | check``: what a ``git push`` runs on CodeBuild, rehearsed on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mlops.cli.console import escape, out


def _default_repo(args) -> str:
    project = args.optional_project
    root = project.root if project else Path.cwd()
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root, capture_output=True, text=True)
    return top.stdout.strip() or str(root)


def _current_branch(repo: str) -> str:
    if not Path(repo).is_dir():
        return "main"
    head = subprocess.run(
        ["git", "symbolic-ref", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
    )
    return head.stdout.strip() or "main"


def _echo(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def cmd_run(args) -> int:
    from mlops.aws.codebuild import BuildFailed, Source, parse_overrides, run_build

    overrides = parse_overrides(args.env_override or [])
    repo = args.repo or _default_repo(args)
    branch = args.branch or _current_branch(repo)
    work_dir = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="mlops-codebuild-"))
    result = run_build(
        Source(repo=repo, branch=branch),
        work_dir,
        environ=os.environ,
        overrides=overrides,
        buildspec=Path(args.buildspec) if args.buildspec else None,
        project_name=args.name or "",
        build_number=args.build_number,
        artifacts_dir=Path(args.artifacts) if args.artifacts else None,
        zip_artifacts=args.zip,
        echo=_echo,
    )
    console = out()
    for phase in result.phases:
        colour = {"SUCCEEDED": "green", "FAILED": "red"}.get(phase.status, "yellow")
        console.print(f"{phase.name:<11} [{colour}]{phase.status:<9}[/] {phase.seconds:7.1f}s")
    for report in result.reports:
        line = report.problem or f"{report.passed} passed, {report.failed} failed, {report.skipped} skipped"
        console.print(f"report {escape(report.group)}: {escape(line)}")
    if result.artifacts_dir:
        console.print(f"artifacts: {len(result.artifacts)} file(s) in {escape(str(result.artifacts_dir))}")
    console.print(f"log: {escape(str(result.log_path))}")
    if not result.succeeded:
        raise BuildFailed(f"build {result.build_id} failed in {result.reason}")
    console.print(f"[green]build {escape(result.build_id)} SUCCEEDED[/] in {result.seconds:.0f}s")
    return 0


def cmd_check(args) -> int:
    from mlops.aws.codebuild import load_buildspec

    spec = load_buildspec(Path(args.file))
    console = out()
    for name, phase in spec.phases.items():
        extra = f", finally {len(phase.finally_)}" if phase.finally_ else ""
        console.print(f"{name}: {len(phase.commands)} command(s){extra}, on-failure {phase.on_failure}")
    console.print(f"[green]ok[/] {escape(args.file)}: version 0.2, shell {spec.shell}")
    return 0


def register(subparsers) -> None:
    group = subparsers.add_parser("buildspec", help="run buildspec.yml the way AWS CodeBuild does, locally")
    sub = group.add_subparsers(dest="buildspec_command", metavar="COMMAND", required=True)
    p = sub.add_parser(
        "run",
        help="clone a repository's branch afresh and run its buildspec as a CodeBuild webhook push would",
    )
    p.add_argument("--repo", help="git repository to clone (default: the project's repository)")
    p.add_argument("--branch", help="branch pushed (default: the repository's current branch)")
    p.add_argument("--buildspec", help="buildspec file, relative to the source (default: buildspec.yml)")
    p.add_argument(
        "--env",
        dest="env_override",
        action="append",
        metavar="K=V",
        help="build environment variable, over the buildspec's and CodeBuild's (repeatable; K= sets it empty)",
    )
    p.add_argument(
        "--work-dir", help="fresh directory for the clone, the log and artifacts (default: a temp dir)"
    )
    p.add_argument("--artifacts", help="directory the artifacts are copied to (default: WORK_DIR/artifacts)")
    p.add_argument("--zip", action="store_true", help="also zip the artifacts, as the CodeBuild project does")
    p.add_argument("--name", help="CodeBuild project name in CODEBUILD_BUILD_ID (default: the repository's)")
    p.add_argument(
        "--build-number", type=int, default=1, help="CODEBUILD_BUILD_NUMBER (default: %(default)s)"
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check", help="check a buildspec file without running it")
    p.add_argument("file", nargs="?", default="buildspec.yml", help="the buildspec (default: %(default)s)")
    p.set_defaults(func=cmd_check)
