"""upsert / start / status / wait / diff against a real moto server; step table via botocore's Stubber."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber
from botocore.validate import ParamValidator

from mlops.aws import pipelines_api as api
from mlops.aws.session import Aws, AwsNotFound
from mlops.definition.parameters import parse_assignments
from mlops.errors import ParameterError
from tests.project import load_config

from .conftest import hand_made_definition, names

SM_MODEL = botocore.session.get_session().get_service_model("sagemaker")
S3_MODEL = botocore.session.get_session().get_service_model("s3")


def check_request(model, operation: str, request: dict) -> None:
    report = ParamValidator().validate(request, model.operation_model(operation).input_shape)
    assert not report.has_errors(), report.generate_report()


def test_upsert_creates_pipeline_with_definition_role_tags_and_bundles(account, cfg, bundle):
    definition = hand_made_definition(cfg)
    progress: list[str] = []
    uploads, results = api.upsert(
        account,
        cfg,
        {"model-build": definition},
        names(cfg),
        [bundle],
        on_progress=progress.append,
        commit="abc123",
    )
    assert [(r.name, r.action) for r in results] == [(cfg.project.build_pipeline, "created")]
    desc = boto3.client("sagemaker").describe_pipeline(PipelineName=cfg.project.build_pipeline)
    assert json.loads(desc["PipelineDefinition"]) == json.loads(definition)
    assert desc["RoleArn"] == cfg.aws.role_arn
    assert desc["PipelineDescription"].endswith("(git abc123)")
    assert desc["ParallelismConfiguration"] == {"MaxParallelExecutionSteps": cfg.local.max_parallel_steps}
    tags = boto3.client("sagemaker").list_tags(ResourceArn=desc["PipelineArn"])["Tags"]
    assert {t["Key"]: t["Value"] for t in tags} == cfg.aws.tags
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=cfg.aws.bucket)["Contents"]}
    prefix = bundle.s3_uri.split("/", 3)[3]
    assert keys == {prefix + "train.py", prefix + "pkg/util.py"}
    assert len(uploads.uploaded) == 2 and any(p.startswith("uploaded s3://") for p in progress)
    head = boto3.client("s3").head_object(Bucket=cfg.aws.bucket, Key=prefix + "train.py")
    assert head["ServerSideEncryption"] == "aws:kms"


def test_second_upsert_of_the_same_tree_changes_nothing(account, cfg, bundle):
    definitions = {"model-build": hand_made_definition(cfg)}
    api.upsert(account, cfg, definitions, names(cfg), [bundle], commit="abc123")
    before = boto3.client("sagemaker").describe_pipeline(PipelineName=cfg.project.build_pipeline)
    progress: list[str] = []
    uploads, results = api.upsert(
        account, cfg, definitions, names(cfg), [bundle], on_progress=progress.append, commit="abc123"
    )
    after = boto3.client("sagemaker").describe_pipeline(PipelineName=cfg.project.build_pipeline)
    assert [r.action for r in results] == ["unchanged"]
    assert uploads.uploaded == [] and uploads.present == 2
    assert after["LastModifiedTime"] == before["LastModifiedTime"]
    assert progress == [f"{cfg.project.build_pipeline}: up to date"]


def test_upsert_updates_a_changed_definition(account, cfg):
    api.upsert(account, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")
    changed = hand_made_definition(cfg, extra_step=True)
    _, results = api.upsert(account, cfg, {"model-build": changed}, names(cfg), commit="b")
    assert [r.action for r in results] == ["updated"]
    desc = boto3.client("sagemaker").describe_pipeline(PipelineName=cfg.project.build_pipeline)
    assert json.loads(desc["PipelineDefinition"]) == json.loads(changed)
    assert desc["PipelineDescription"].endswith("(git b)")


def test_upsert_without_the_execution_role_names_it(aws, cfg):
    with pytest.raises(AwsNotFound, match=r"aws.role_arn: role digits-ci-sagemaker-execution does not exist"):
        api.upsert(aws, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")


def test_start_passes_our_parameters(account, cfg):
    api.upsert(account, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")
    arn = api.start(account, cfg.project.build_pipeline, {"Threshold": "0.97", "TrainInstanceCount": "3"})
    got = boto3.client("sagemaker").list_pipeline_parameters_for_execution(PipelineExecutionArn=arn)
    assert {p["Name"]: p["Value"] for p in got["PipelineParameters"]} == {
        "Threshold": "0.97",
        "TrainInstanceCount": "3",
    }
    execs = boto3.client("sagemaker").list_pipeline_executions(PipelineName=cfg.project.build_pipeline)
    assert [e["PipelineExecutionArn"] for e in execs["PipelineExecutionSummaries"]] == [arn]


@pytest.mark.parametrize(
    "params, message",
    [
        (
            {"Nope": "1"},
            r"--param Nope: pipeline .* has no such parameter \(known: InputDataUri, Threshold, TrainInstanceCount\)",
        ),
        ({"TrainInstanceCount": "two"}, r"--param TrainInstanceCount=two: not a valid Integer"),
        ({"Threshold": "high"}, r"--param Threshold=high: not a valid Float"),
    ],
)
def test_start_rejects_bad_parameters(account, cfg, params, message):
    api.upsert(account, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")
    with pytest.raises(ParameterError, match=message):
        api.start(account, cfg.project.build_pipeline, params)
    execs = boto3.client("sagemaker").list_pipeline_executions(PipelineName=cfg.project.build_pipeline)
    assert execs["PipelineExecutionSummaries"] == []


@pytest.mark.parametrize("pairs, message", [(["x"], "expects NAME=VALUE"), (["=1"], "expects NAME=VALUE")])
def test_parse_params_rejects_malformed_pairs(pairs, message):
    with pytest.raises(ParameterError, match=message):
        parse_assignments(pairs)


def test_start_of_a_missing_pipeline_says_upsert_first(aws):
    with pytest.raises(AwsNotFound, match=r"pipeline nope .*run `mlops upsert` first"):
        api.start(aws, "nope", {})


def test_status_and_wait_fall_back_to_the_execution_status_on_moto(account, cfg):
    api.upsert(account, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")
    arn = api.start(account, cfg.project.build_pipeline)
    state = api.status(account, arn)
    assert (state.status, state.steps, state.pipeline) == ("Succeeded", None, cfg.project.build_pipeline)
    seen = []
    final = api.wait(account, arn, seen.append, sleep=lambda s: pytest.fail("no sleep after a final status"))
    assert final.exit_code == 0 and [s.status for s in seen] == ["Succeeded"]


# ---------------------------------------------------------------------------------- Stubber: steps


def _stubbed(responses):
    """An Aws whose sagemaker client answers from ``responses`` (validated against the service model)."""
    aws = Aws(
        "eu-west-1",
        session=boto3.Session(aws_access_key_id="x", aws_secret_access_key="y", region_name="eu-west-1"),
    )
    client = aws.sagemaker
    stub = Stubber(client)
    for op, response, params in responses:
        stub.add_response(op, response, params)
    stub.activate()
    return aws, stub


ARN = "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/digits-model-build/execution/abc123def456"
T0 = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)


def _describe(status):
    return {
        "PipelineArn": "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/digits-model-build",
        "PipelineExecutionArn": ARN,
        "PipelineExecutionStatus": status,
        "CreationTime": T0,
        "LastModifiedTime": T0 + dt.timedelta(minutes=9),
        **({"FailureReason": "Step failure: One or multiple steps failed."} if status == "Failed" else {}),
    }


def _steps(*rows):
    return {
        "PipelineExecutionSteps": [
            {
                "StepName": name,
                "StepStatus": status,
                "StartTime": T0,
                **({"EndTime": T0 + dt.timedelta(minutes=3)} if status in ("Succeeded", "Failed") else {}),
                **({"FailureReason": reason} if reason else {}),
                "Metadata": {
                    kind: {"Arn": f"arn:aws:sagemaker:eu-west-1:123456789012:{kind.lower()}-job/{name}"}
                },
            }
            for name, status, kind, reason in rows
        ]
    }


def test_status_lists_steps_when_the_api_has_them():
    q = {"PipelineExecutionArn": ARN, "SortOrder": "Ascending"}
    aws, stub = _stubbed(
        [
            ("describe_pipeline_execution", _describe("Failed"), {"PipelineExecutionArn": ARN}),
            (
                "list_pipeline_execution_steps",
                _steps(
                    ("preprocess", "Succeeded", "ProcessingJob", ""),
                    ("train", "Failed", "TrainingJob", "ClientError: OOM"),
                ),
                q,
            ),
        ]
    )
    state = api.status(aws, ARN)
    stub.assert_no_pending_responses()
    assert state.status == "Failed" and state.exit_code == 1
    assert [(s.name, s.status, s.kind, s.reason) for s in state.steps] == [
        ("preprocess", "Succeeded", "ProcessingJob", ""),
        ("train", "Failed", "TrainingJob", "ClientError: OOM"),
    ]
    assert state.as_dict()["steps"][1]["ended"] == "2026-01-01T03:03:00+00:00"


def test_wait_backs_off_and_shows_every_state_until_the_end():
    q = {"PipelineExecutionArn": ARN, "SortOrder": "Ascending"}
    d = {"PipelineExecutionArn": ARN}
    aws, stub = _stubbed(
        [
            ("describe_pipeline_execution", _describe("Executing"), d),
            ("list_pipeline_execution_steps", _steps(("preprocess", "Executing", "ProcessingJob", "")), q),
            ("describe_pipeline_execution", _describe("Executing"), d),
            (
                "list_pipeline_execution_steps",
                _steps(
                    ("preprocess", "Succeeded", "ProcessingJob", ""),
                    ("train", "Executing", "TrainingJob", ""),
                ),
                q,
            ),
            ("describe_pipeline_execution", _describe("Succeeded"), d),
            (
                "list_pipeline_execution_steps",
                _steps(
                    ("preprocess", "Succeeded", "ProcessingJob", ""),
                    ("train", "Succeeded", "TrainingJob", ""),
                ),
                q,
            ),
        ]
    )
    sleeps, seen = [], []
    final = api.wait(
        aws,
        ARN,
        lambda s: seen.append([x.status for x in s.steps]),
        first_delay_s=2,
        max_delay_s=3,
        sleep=sleeps.append,
    )
    stub.assert_no_pending_responses()
    assert final.exit_code == 0
    assert sleeps == [2, 3]
    assert seen == [["Executing"], ["Succeeded", "Executing"], ["Succeeded", "Succeeded"]]


def test_wait_gives_up_after_the_timeout():
    d = {"PipelineExecutionArn": ARN}
    aws, _ = _stubbed(
        [
            ("describe_pipeline_execution", _describe("Executing"), d),
            (
                "list_pipeline_execution_steps",
                _steps(),
                {"PipelineExecutionArn": ARN, "SortOrder": "Ascending"},
            ),
        ]
    )
    with pytest.raises(api.AwsError, match=r"still Executing after 1 s"):
        api.wait(aws, ARN, first_delay_s=5, timeout_s=1, sleep=lambda s: None)


# ----------------------------------------------------------------------------------------------- diff


def test_diff_is_empty_after_upsert_and_names_the_change_after_a_config_edit(account, cfg, ci_config_dir):
    api.upsert(account, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="a")
    assert [d.lines for d in api.diff(account, {"model-build": hand_made_definition(cfg)}, names(cfg))] == [
        []
    ]

    edited = load_config(
        "ci",
        directory=ci_config_dir,
        environ={
            "MLOPS__EVALUATION__THRESHOLD": "0.95",
            "MLOPS__STEPS__TRAIN__HYPERPARAMETERS__EPOCHS": "30",
        },
    )
    (result,) = api.diff(account, {"model-build": hand_made_definition(edited, extra_step=True)}, names(cfg))
    assert result.changed
    assert result.lines == [
        "~ parameter Threshold",
        f"  ~ parameter Threshold: DefaultValue: {cfg.evaluation.threshold} -> 0.95",
        "+ step notify (Fail)",
        "~ step train",
        '  ~ step train: Arguments.HyperParameters.epochs: "20" -> "30"',
    ]


def test_diff_of_an_undeployed_pipeline_says_so(aws, cfg):
    (result,) = api.diff(aws, {"model-build": hand_made_definition(cfg)}, names(cfg))
    assert result.lines == ["+ pipeline not deployed (2 steps would be created)"]


def test_diff_reaches_into_condition_branches(cfg):
    old = json.loads(hand_made_definition(cfg))
    new = json.loads(hand_made_definition(cfg))
    new["Steps"][1]["Arguments"]["IfSteps"][0]["Arguments"]["ModelPackageGroupName"] = "other"
    lines = api.definition_diff(json.dumps(old), json.dumps(new))
    assert lines == [
        "~ step register",
        f'  ~ step register: Arguments.ModelPackageGroupName: "{cfg.registry.model_package_group}" -> "other"',
    ]


# ------------------------------------------------------------------------------ requests vs service model


def test_every_request_we_build_validates_against_botocore(cfg, bundle):
    definition = hand_made_definition(cfg)
    check_request(SM_MODEL, "CreatePipeline", api.create_pipeline_request(cfg, "p", definition, "abc"))
    check_request(SM_MODEL, "UpdatePipeline", api.update_pipeline_request(cfg, "p", definition, "abc"))
    check_request(
        SM_MODEL,
        "StartPipelineExecution",
        api.start_request("p", {"Threshold": "0.5"}, definition, "nightly"),
    )
    check_request(
        SM_MODEL,
        "AddTags",
        {
            "ResourceArn": "arn:aws:sagemaker:eu-west-1:123456789012:pipeline/p",
            "Tags": api.aws_tags(cfg.aws.tags),
        },
    )
    check_request(S3_MODEL, "PutObject", api.put_object_request(cfg, cfg.aws.bucket, "k", b"x"))
    long = cfg.model_copy(update={"project": cfg.project.model_copy(update={"description": "d" * 5000})})
    assert (
        len(api.create_pipeline_request(long, "p", definition, "abc")["PipelineDescription"])
        == api.DESCRIPTION_LIMIT
    )
