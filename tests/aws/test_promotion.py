"""``mlops models promote --target aws`` end to end on real parts: a real Callback step (the project's gate,
run by the local executor) waits; its message sits on moto's SQS queue as SageMaker would put it there; the
promotion finds it among other versions' messages and answers through the sagemaker API, here the local
control plane (moto has no SendPipelineExecutionStep*), whose answer completes the waiting step."""

from __future__ import annotations

import json

import boto3
import pytest

from mlops.aws.promotion import PromotionNotWaiting, promote
from mlops.aws.session import Aws
from mlops.local.hosting.control_plane import ControlPlane
from mlops.local.hosting.endpoints import LocalHosting
from mlops.local.options import RunOptions
from mlops.local.s3store import S3Store
from mlops.serving.runtime_api import RuntimeApiServer
from steps.promotion_gate.step import declaration, queue_name
from tests.local.test_callback_step import Background
from tests.local.test_lambda_step import sdk_session
from tests.project import load_config

from .conftest import REGION

ARN = f"arn:aws:sagemaker:{REGION}:123456789012:model-package/digits-classifier/4"
OTHER = ARN.replace("/4", "/3")


def gate_pipeline(cfg) -> dict:
    """The project's gate step, alone: what model-deploy waits on between staging and production."""
    from sagemaker.core.workflow.parameters import ParameterString
    from sagemaker.mlops.workflow.pipeline import Pipeline

    from steps.promotion_gate.step import build

    session = sdk_session()
    package = ParameterString(name="ModelPackageArn")
    ctx = type("Ctx", (), {"cfg": cfg})()
    gate = build(ctx, package, smoke_step="SmokeTest")
    gate.depends_on = []
    pipeline = Pipeline(name="gate", parameters=[package], steps=[gate], sagemaker_session=session)
    return json.loads(pipeline.definition())


@pytest.fixture
def sagemaker_api(tmp_path, monkeypatch):
    """The local sagemaker API over the home the run uses; boto3's sagemaker client goes there."""
    home = tmp_path / "home"
    store = S3Store(home / "s3")
    hosting = LocalHosting(home, store)
    control = ControlPlane(home, hosting, store)
    with RuntimeApiServer(home, hosting=hosting, services={"SageMaker": control.handle}) as api:
        monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER", api.url)
        yield home
    control.close()
    hosting.close(delete=True)


def test_promote_answers_the_waiting_gate_through_the_queue_and_sagemaker(moto, sagemaker_api):
    cfg = load_config("prod")
    gate = declaration()
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName=queue_name(cfg))["QueueUrl"]
    run = Background(gate_pipeline(cfg), sagemaker_api, RunOptions(params={"ModelPackageArn": ARN}))
    row = run.waiting()
    assert row["queue_url"] == gate.queue_url(cfg)
    # SageMaker's delivery of the callback message; another version's message waits on the same queue
    other = {**row["message"], "token": "otherToken", "arguments": {"ModelPackageArn": OTHER}}
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(other))
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(row["message"]))

    with pytest.raises(PromotionNotWaiting, match="no promotion message for .*/digits-classifier/5"):
        promote(Aws(REGION), gate, cfg, ARN.replace("/4", "/5"), actor="bob", reason="r", wait_s=1)
    execution = promote(Aws(REGION), gate, cfg, ARN, actor="bob", reason="staging looks right", wait_s=5)
    assert execution == row["message"]["pipelineExecutionArn"]

    record = run.result()
    assert record.status == "Succeeded"
    step = record.steps["ApproveProduction"]
    assert step.properties["OutputParameters"] == {"PromotedBy": "bob"}
    # ours is gone from the queue; the other version's message is back, visible at once
    left = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert [json.loads(m["Body"])["arguments"]["ModelPackageArn"] for m in left] == [OTHER]


def test_a_rejected_promotion_fails_the_gate_with_the_reason(moto, sagemaker_api):
    cfg = load_config("prod")
    gate = declaration()
    sqs = boto3.client("sqs", region_name=REGION)
    queue = sqs.create_queue(QueueName=queue_name(cfg))["QueueUrl"]
    run = Background(gate_pipeline(cfg), sagemaker_api, RunOptions(params={"ModelPackageArn": ARN}))
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(run.waiting()["message"]))
    promote(Aws(REGION), gate, cfg, ARN, actor="bob", reason="p99 too high", reject=True, wait_s=5)
    record = run.result()
    assert record.status == "Failed"
    assert "promotion rejected by bob: p99 too high" in record.steps["ApproveProduction"].failure_reason
