"""The CLI (mlops.cli.main.main with our register()) against moto: what a user sees and the exit codes."""

from __future__ import annotations

import json

import boto3
import pytest

from mlops.aws import pipelines_api as api
from mlops.cli.main import main

from .conftest import hand_made_definition, names

REPO = "https://github.com/example/digits.git"
# moto's CloudFormation skips resource types it does not model (CodeBuild, Scheduler, policies) with a warning.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")


def test_infra_render_writes_parameters_and_prints_them(moto, cfg, tmp_path, capsys):
    out = tmp_path / "params" / "ci.json"
    assert main(["infra", "render", "--env", "ci", "--repo-url", REPO, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text.replace("\n", "") or str(out) in text
    written = {p["ParameterKey"]: p["ParameterValue"] for p in json.loads(out.read_text())}
    assert written["ScheduleExpression"] == "cron(15 4 ? * TUE *)" and written["RepositoryUrl"] == REPO
    assert "ModelPackageGroupName" in text


def test_infra_render_json(moto, cfg, tmp_path, capsys):
    assert (
        main(
            [
                "infra",
                "render",
                "--env",
                "ci",
                "--repo-url",
                REPO,
                "--out",
                str(tmp_path / "p.json"),
                "--format",
                "json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["parameters"]["BuildPipelineName"] == cfg.project.build_pipeline


def test_bootstrap_shows_events_then_says_up_to_date(moto, cfg, capsys):
    assert main(["bootstrap", "--env", "ci", "--repo-url", REPO, "--poll", "0.05"]) == 0
    first = capsys.readouterr().out
    assert "deploying stack digits-ci-mlops" in first and "CREATE_COMPLETE" in first and "created" in first
    assert main(["bootstrap", "--env", "ci", "--repo-url", REPO, "--poll", "0.05"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_start_status_and_wait(account, cfg, capsys):
    api.upsert(account, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")
    assert main(["start", "--env", "ci", "--param", "Threshold=0.5", "--format", "json"]) == 0
    arn = json.loads(capsys.readouterr().out)["execution_arn"]
    params = boto3.client("sagemaker").list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)
    assert params["PipelineParameters"] == [{"Name": "Threshold", "Value": "0.5"}]

    assert main(["status", arn, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["status"], doc["steps"], doc["pipeline"]) == ("Succeeded", None, cfg.project.build_pipeline)

    assert main(["status", arn]) == 0
    assert "Succeeded" in capsys.readouterr().out

    assert main(["wait", arn, "--poll", "0.01"]) == 0
    assert "Succeeded" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (
            ["start", "--env", "ci", "--param", "Nope=1"],
            2,
            "--param Nope: pipeline digits-model-build has no such parameter",
        ),
        (["start", "--env", "ci", "--param", "novalue"], 2, "expects NAME=VALUE"),
        (["status", "arn:aws:s3:::bucket"], 2, "not a pipeline execution ARN"),
        (
            ["start", "--env", "ci", "--pipeline", "model-deploy"],
            1,
            "not found: pipeline digits-model-deploy",
        ),
        (["start", "--env", "nope"], 2, "unknown environment 'nope'"),
    ],
)
def test_bad_input_gets_one_red_line_and_an_exit_code(account, cfg, capsys, argv, code, message):
    api.upsert(account, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_the_step_table_shows_each_step_with_its_status_and_reason():
    import datetime as dt

    from rich.console import Console

    from mlops.cli.aws import _state_table

    t0 = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)
    state = api.ExecutionState(
        arn="arn:aws:sagemaker:eu-west-1:123456789012:pipeline/p/execution/x",
        status="Failed",
        pipeline="digits-model-build",
        started=t0,
        steps=[
            api.StepRow("Preprocess", "Succeeded", t0, t0, "", "ProcessingJob"),
            api.StepRow("Train", "Failed", t0, t0, "ClientError: out of memory", "TrainingJob"),
        ],
    )
    console = Console(record=True, width=200)
    console.print(_state_table(state))
    text = console.export_text()
    assert "digits-model-build: Failed" in text
    assert "Preprocess" in text and "ProcessingJob" in text
    assert "Train" in text and "ClientError: out of memory" in text and "2026-01-01 03:00:00" in text


@pytest.mark.parametrize("with_endpoint", [True, False], ids=["moto endpoint", "no endpoint at all"])
@pytest.mark.parametrize(
    "argv, action",
    [
        (["upsert", "--env", "ci"], "iam:GetRole"),
        (["bootstrap", "--env", "ci", "--repo-url", REPO], "cloudformation:DescribeStacks"),
    ],
)
def test_upsert_and_bootstrap_without_credentials_say_so_in_one_line(
    moto, cfg, tmp_path, monkeypatch, capsys, argv, action, with_endpoint
):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("MLOPS_COMPILE_CACHE", str(tmp_path / "cache"))
    if not with_endpoint:
        monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens: no call may be made
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: no AWS credentials found for {action}: set AWS_PROFILE or "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run where an IAM role is attached"
    )
