"""buildspec.yml run the way CodeBuild runs it (mlops.aws.codebuild, `mlops buildspec run`): the runner's
semantics on small handwritten buildspecs, then the project's own buildspec against moto's server."""

from __future__ import annotations

import os
import subprocess
import textwrap
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import boto3
import pytest

from mlops.aws.codebuild import Source, run_build
from mlops.cli.main import main

REPO_ROOT = Path(__file__).resolve().parents[2]
# moto's CloudFormation skips resource types it does not model with a warning (shared fixtures).
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _repo(tmp_path: Path, buildspec: str, files: dict[str, str] | None = None) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "buildspec.yml").write_text(textwrap.dedent(buildspec))
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "first")
    (repo / "second.txt").write_text("2\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "second")
    return repo


def _build(tmp_path, repo, branch="main", **kwargs):
    lines: list[str] = []
    result = run_build(
        Source(str(repo), branch), tmp_path / "work", environ=os.environ, echo=lines.append, **kwargs
    )
    return result, [line for line in lines if not line.startswith("[Container]")], lines


ORDER = """\
version: 0.2
env:
  shell: bash
  variables:
    FROM_SPEC: spec
    OVERRIDDEN: spec
phases:
  post_build:
    commands:
      - echo "post_build in $(basename "$PWD") $IN_INSTALL $COUNT"
  install:
    runtime-versions:
      python: 3.11
    commands:
      - mkdir -p deeper && cd deeper
      - export IN_INSTALL=exported; COUNT=1
  build:
    commands:
      - COUNT=$((COUNT + 1)); echo "build $COUNT $FROM_SPEC $OVERRIDDEN"
      - echo "$CODEBUILD_RESOLVED_SOURCE_VERSION $CODEBUILD_WEBHOOK_HEAD_REF $CODEBUILD_WEBHOOK_TRIGGER"
      - echo "$CODEBUILD_WEBHOOK_EVENT $CODEBUILD_WEBHOOK_PREV_COMMIT $CODEBUILD_BUILD_SUCCEEDING $CODEBUILD_SRC_DIR"
  pre_build:
    commands:
      - echo "pre_build in $(basename "$PWD") $IN_INSTALL $COUNT"
"""


def test_phases_run_in_order_in_one_shell_with_codebuild_variables(tmp_path):
    repo = _repo(tmp_path, ORDER)
    result, output, log = _build(tmp_path, repo, overrides={"OVERRIDDEN": "override"})
    head, prev = _git(repo, "rev-parse", "HEAD"), _git(repo, "rev-parse", "HEAD^")
    src = tmp_path / "work" / "src"
    assert result.succeeded and result.reason == ""
    assert output == [
        "pre_build in deeper exported 1",
        "build 2 spec override",
        f"{head} refs/heads/main branch/main",
        f"PUSH {prev} 1 {src}",
        "post_build in deeper exported 2",
    ]
    assert [(p.name, p.status) for p in result.phases] == [
        ("INSTALL", "SUCCEEDED"),
        ("PRE_BUILD", "SUCCEEDED"),
        ("BUILD", "SUCCEEDED"),
        ("POST_BUILD", "SUCCEEDED"),
    ]
    assert any("Running command mkdir -p deeper && cd deeper" in line for line in log)
    assert any("Phase complete: BUILD State: SUCCEEDED" in line for line in log)
    assert any("Selecting 'python' runtime version '3.11'" in line for line in log)
    assert result.log_path.read_text().splitlines() == log  # the terminal and the log file agree
    assert not (repo / "deeper").exists()  # the build ran in its own clone


FAILING_BUILD = """\
version: 0.2
phases:
  pre_build:
    commands:
      - echo "pre_build $CODEBUILD_BUILD_SUCCEEDING"
  build:
    commands:
      - echo "build runs"; false
      - echo "never printed"
    finally:
      - echo "build finally $CODEBUILD_BUILD_SUCCEEDING"
  post_build:
    commands:
      - mkdir -p out/logs out/deep/er && echo a > out/logs/a.log && echo b > out/deep/er/b.txt
      - echo "post_build $CODEBUILD_BUILD_SUCCEEDING"
artifacts:
  base-directory: out
  name: bundle
  discard-paths: yes
  files:
    - "**/*.txt"
    - logs/*
"""


def test_a_failed_build_still_runs_finally_post_build_and_the_upload(tmp_path):
    repo = _repo(tmp_path, FAILING_BUILD)
    result, output, log = _build(tmp_path, repo, zip_artifacts=True)
    assert output == ["pre_build 1", "build runs", "build finally 0", "post_build 0"]
    assert [(p.name, p.status) for p in result.phases] == [
        ("PRE_BUILD", "SUCCEEDED"),
        ("BUILD", "FAILED"),
        ("POST_BUILD", "SUCCEEDED"),
    ]
    assert result.status == "FAILED"
    assert result.reason == "BUILD: command 'echo \"build runs\"; false' exited 1"
    assert any("Phase complete: BUILD State: FAILED" in line for line in log)
    # discard-paths: every matched file lands at the top of the artifact named `bundle`
    dest = tmp_path / "work" / "artifacts" / "bundle"
    assert sorted(p.name for p in dest.iterdir()) == ["a.log", "b.txt"]
    assert sorted(zipfile.ZipFile(result.zip_path).namelist()) == ["a.log", "b.txt"]


FAILING_PRE_BUILD = """\
version: 0.2
phases:
  install:
    on-failure: CONTINUE
    commands:
      - exit_code_of_a_missing_tool_is_127
  pre_build:
    commands:
      - echo "pre_build after a failed install $CODEBUILD_BUILD_SUCCEEDING"
      - "false"
      - echo "never printed"
    finally:
      - echo "pre_build finally"
  build:
    commands:
      - echo "build never runs"
  post_build:
    commands:
      - echo "post_build never runs"
artifacts:
  files: ["**/*"]
"""


def test_a_failed_pre_build_skips_the_later_phases_but_not_its_finally(tmp_path):
    repo = _repo(tmp_path, FAILING_PRE_BUILD)
    result, output, log = _build(tmp_path, repo)
    assert [line for line in output if "not found" not in line] == [
        "pre_build after a failed install 0",
        "pre_build finally",
    ]
    assert [(p.name, p.status) for p in result.phases] == [
        ("INSTALL", "FAILED"),
        ("PRE_BUILD", "FAILED"),
        ("BUILD", "SKIPPED"),
        ("POST_BUILD", "SKIPPED"),
    ]
    assert result.reason == "INSTALL: command 'exit_code_of_a_missing_tool_is_127' exited 127"  # the first
    assert result.artifacts_dir is None and any("Skipping UPLOAD_ARTIFACTS" in line for line in log)


REPORTS = """\
version: 0.2
phases:
  build:
    commands:
      - mkdir -p build/reports build/defs && cp fixtures/junit.xml build/reports/ && echo {} > build/defs/p.json
reports:
  unit-tests:
    base-directory: build/reports
    files: [junit.xml]
    file-format: JUNITXML
  missing:
    files: [nowhere/*.xml]
artifacts:
  base-directory: build
  files: ["**/*"]
"""
JUNIT = """\
<testsuites><testsuite name="pytest" tests="4">
  <testcase classname="t" name="a"/><testcase classname="t" name="b"/>
  <testcase classname="t" name="c"><failure message="boom"/></testcase>
  <testcase classname="t" name="d"><skipped/></testcase>
</testsuite></testsuites>
"""


def test_reports_are_summarised_and_artifact_globs_keep_their_paths(tmp_path):
    repo = _repo(tmp_path, REPORTS, {"fixtures/junit.xml": JUNIT})
    result, _, log = _build(tmp_path, repo, artifacts_dir=tmp_path / "out")
    unit, missing = result.reports
    assert (unit.total, unit.passed, unit.failed, unit.skipped) == (4, 2, 1, 1)
    assert "report files not found" in missing.problem
    assert result.succeeded  # failed test cases and a missing report do not fail a CodeBuild build
    assert any("Report group unit-tests (JUNITXML, 1 file(s)): 4 test case(s), 2 passed" in x for x in log)
    dest = tmp_path / "out" / "artifacts"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "defs/p.json",
        "reports/junit.xml",
    ]


@pytest.mark.parametrize(
    "buildspec, message",
    [
        ("phases:\n  build:\n    commands: [ls]\n", "buildspec.yml: version: missing"),
        ("version: 0.2\nphases:\n  test:\n    commands: [ls]\n", "buildspec.yml: phases.test: unknown phase"),
        ("version: 0.2\nphases:\n  build:\n    commands: ls\n", "phases.build.commands: expected a list"),
        (
            "version: 0.2\nphases:\n  build:\n    on-failure: RETRY\n    commands: [ls]\n",
            "phases.build.on-failure: 'RETRY' is not one of ABORT, CONTINUE",
        ),
        ("version: 0.2\nenv:\n  variables:\n    A: [1]\nphases: {}\n", "env.variables.A: a variable's value"),
        ("version: 0.1\nphases:\n  build:\n    commands: [ls]\n", "version: 0.1 is not supported"),
        (
            "version: 0.2\nphases:\n  build:\n    commands:\n      - echo a: b\n",
            "phases.build.commands[0]: reads as a mapping, not a command",
        ),
    ],
)
def test_a_bad_buildspec_is_one_line_naming_the_field_before_anything_runs(
    tmp_path, capsys, buildspec, message
):
    repo = _repo(tmp_path, buildspec)
    work = tmp_path / "work"
    assert main(["buildspec", "run", "--repo", str(repo), "--branch", "main", "--work-dir", str(work)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (work / ".codebuild").exists()  # no command ran


def test_the_cli_names_the_failed_phase_and_command_in_one_line(tmp_path, capsys):
    repo = _repo(tmp_path, FAILING_BUILD)
    argv = ["buildspec", "run", "--repo", str(repo), "--work-dir", str(tmp_path / "work")]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "[Container]" in captured.out and "build runs" in captured.out
    assert captured.err.count("\n") == 1
    assert "failed in BUILD: command 'echo \"build runs\"; false' exited 1" in captured.err


# ------------------------------------------------------------------------ the project's own buildspec

TEST_SELECTION = (
    "tests/aws/test_pipelines_api.py::test_upsert_updates_a_changed_definition "
    "tests/aws/test_pipelines_api.py::test_start_passes_our_parameters"
)


@pytest.mark.slow
def test_buildspec_rehearsal_upserts_on_every_push_and_starts_on_main_only(
    account, cfg, ci_config_dir, tmp_path, capsys
):
    """A push to main, then to another branch, through this repository's committed buildspec.yml: the real
    install phase (a fresh venv from pip's local cache), a small selection of real tests, compile, graph,
    diff, upsert to moto's server, start on main only."""
    origin = tmp_path / "origin"
    _git(tmp_path, "clone", "-q", str(REPO_ROOT), str(origin))  # HEAD of this checkout: committed files
    _git(origin, "checkout", "-q", "-B", "main")
    _git(origin, "branch", "feature/readme")
    overrides = [
        "MLOPS_ENV=ci",
        f"MLOPS_CONFIG_DIR={ci_config_dir}",
        "MLOPS_AWS_MAX_ATTEMPTS=2",
        "TORCH_INDEX_URL=",  # pip's default index: on this machine a CPU wheel from its find-links
        "CHECKOV=0",  # checkov's own venv serves only the checkov test, not in the selection
        f"MLOPS_TEST_ARGS={TEST_SELECTION}",
    ]

    def push(branch: str, work: Path, *extra: str) -> float:
        argv = ["buildspec", "run", "--repo", str(origin), "--branch", branch, "--work-dir", str(work)]
        for pair in [*overrides, *extra]:
            argv += ["--env", pair]
        started = time.monotonic()
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, captured.out[-4000:] + captured.err
        return time.monotonic() - started

    main_seconds = push("main", tmp_path / "main")
    built = tmp_path / "main" / "artifacts" / "artifacts"
    junit = ET.parse(built / "reports" / "junit.xml").getroot()
    cases = list(junit.iter("testcase"))
    assert len(cases) == 2 and not any(
        c.find("failure") is not None or c.find("error") is not None for c in cases
    )
    for name in ("model-build.json", "model-deploy.json", "model-build.svg", "diff.txt"):
        assert (built / name).is_file(), name
    sm = boto3.client("sagemaker")
    names = {p["PipelineName"] for p in sm.list_pipelines()["PipelineSummaries"]}
    assert {cfg.project.build_pipeline, cfg.project.deploy_pipeline} <= names
    described = sm.describe_pipeline(PipelineName=cfg.project.build_pipeline)
    assert described["PipelineArn"].endswith(f"pipeline/{cfg.project.build_pipeline}")
    executions = sm.list_pipeline_executions(PipelineName=cfg.project.build_pipeline)[
        "PipelineExecutionSummaries"
    ]
    assert len(executions) == 1

    # The other branch reuses the main build's virtualenv (VENV, as CodeBuild's cache would): its install
    # phase still runs scripts/bootstrap.sh, which finds the venv up to date.
    feature_seconds = push(
        "feature/readme", tmp_path / "feature", f"VENV={tmp_path / 'main' / 'src' / '.venv'}"
    )
    log = (tmp_path / "feature" / "build.log").read_text()
    assert "not starting a pipeline execution: refs/heads/feature/readme is not refs/heads/main" in log
    assert (tmp_path / "feature" / "artifacts" / "artifacts" / "diff.txt").is_file()
    executions = sm.list_pipeline_executions(PipelineName=cfg.project.build_pipeline)[
        "PipelineExecutionSummaries"
    ]
    assert len(executions) == 1  # still only main's
    print(f"rehearsal: main build {main_seconds:.0f}s, feature build {feature_seconds:.0f}s")


EXITING = """\
version: 0.2
phases:
  build:
    on-failure: CONTINUE
    commands:
      - export GONE=state; exit 3
  post_build:
    commands:
      - 'echo "post_build in a new shell: ${GONE:-unset} $CODEBUILD_BUILD_SUCCEEDING"'
"""


def test_a_command_that_exits_the_shell_fails_and_the_next_phase_gets_a_new_shell(tmp_path):
    result, output, log = _build(tmp_path, _repo(tmp_path, EXITING))
    assert [line for line in output if line] == ["post_build in a new shell: unset 0"]
    assert result.reason == "BUILD: command 'export GONE=state; exit 3' exited 3"
    assert any("The build's shell exited" in line for line in log)
