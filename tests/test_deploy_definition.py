"""The compiled model-deploy definition and the requests its API-calling steps make."""

from __future__ import annotations

import json

import pytest

from mlops.definition.validate import validate_definition, validate_request
from steps.endpoint_ops.code.endpoint_ops import alarm_names, alarm_requests, scaling_requests
from steps.smoke_test.code.smoke_test import run_smoke_test

from .test_compile import steps_by_name


def _botocore_errors(service: str, operation: str, request: dict) -> list[str]:
    import botocore.session
    from botocore.validate import ParamValidator

    model = botocore.session.get_session().get_service_model(service).operation_model(operation)
    report = ParamValidator().validate(request, model.input_shape)
    return report.generate_report().splitlines() if report.has_errors() else []


def test_deploy_dag(compiled_prod):
    d = compiled_prod.definition("model-deploy")
    steps = steps_by_name(d)
    assert [s["Name"] for s in d["Steps"]] == [
        "CreateModel",
        "StagingEndpointConfig",
        "StagingEndpoint",
        "SmokeTest",
        "PromoteToProduction",
    ]
    assert {p["Name"] for p in d["Parameters"]} == {"ModelPackageArn", "TargetStage", "SmokeTestDataUri"}
    assert steps["CreateModel"]["Arguments"]["Containers"] == [
        {"ModelPackageName": {"Get": "Parameters.ModelPackageArn"}}
    ]
    promote = steps["PromoteToProduction"]["Arguments"]
    assert [s["Name"] for s in promote["IfSteps"]] == [
        "ApproveProduction",
        "ProductionEndpointConfig",
        "ProductionAlarms",
        "ProductionEndpoint",
        "ProductionAutoscaling",
    ]
    assert steps["SmokeTest"]["DependsOn"] == ["StagingEndpoint"]
    assert validate_definition(d) == []


def test_production_waits_for_the_promotion_callback(compiled_prod):
    steps = steps_by_name(compiled_prod.definition("model-deploy"))
    gate = steps["ApproveProduction"]
    assert gate["Type"] == "Callback" and gate["DependsOn"] == ["SmokeTest"]
    # the queue infra/mlops.yaml creates for the environment, in the pipeline role's account and region
    assert gate["SqsQueueUrl"] == "https://sqs.eu-west-1.amazonaws.com/123456789012/digits-prod-promotion"
    assert gate["Arguments"] == {
        "ModelPackageArn": {"Get": "Parameters.ModelPackageArn"},
        "StagingEndpoint": "digits-staging",
        "ProductionEndpoint": "digits-production",
    }
    assert [o["OutputName"] for o in gate["OutputParameters"]] == ["PromotedBy"]
    assert "ApproveProduction" in steps["ProductionEndpoint"]["DependsOn"]


def test_dev_has_no_promotion_gate():
    from mlops.compile.compiler import compile_pipelines
    from tests.project import PROJECT, load_config

    d = compile_pipelines(PROJECT, load_config("dev")).definition("model-deploy")
    promote = steps_by_name(d)["PromoteToProduction"]["Arguments"]
    assert "ApproveProduction" not in [s["Name"] for s in promote["IfSteps"]]
    assert "ApproveProduction" not in steps_by_name(d)["ProductionEndpoint"].get("DependsOn", [])


def test_endpoint_config_data_capture_kms_and_blue_green_rollback(compiled_prod):
    steps = steps_by_name(compiled_prod.definition("model-deploy"))
    config = steps["ProductionEndpointConfig"]["Arguments"]
    assert config["KmsKeyId"] == "alias/digits-prod"
    assert config["DataCaptureConfig"]["InitialSamplingPercentage"] == 20
    (variant,) = config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.m5.large" and variant["InitialInstanceCount"] == 2
    deployment = steps["ProductionEndpoint"]["Arguments"]["DeploymentConfig"]
    routing = deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 300,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
    }
    assert [a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]] == alarm_names(
        "digits-production"
    )
    assert validate_request("CreateEndpoint", steps["ProductionEndpoint"]["Arguments"]) == []


def test_alarm_and_autoscaling_requests_are_valid_for_botocore():
    for request in alarm_requests("digits-production", 0.01, 200, 2):
        assert _botocore_errors("cloudwatch", "PutMetricAlarm", request) == []
    target, policy = scaling_requests("digits-production", 2, 6, 200.0)
    assert _botocore_errors("application-autoscaling", "RegisterScalableTarget", target) == []
    assert _botocore_errors("application-autoscaling", "PutScalingPolicy", policy) == []
    assert target["ResourceId"] == "endpoint/digits-production/variant/AllTraffic"


def _invoker(label_for, status=200, delay=0.0):
    import time

    def invoke(body, content_type):
        time.sleep(delay)
        row = json.loads(body)["instances"][0]
        return status, json.dumps({"predictions": [{"label": label_for(row)}]}).encode()

    return invoke


@pytest.mark.parametrize(
    "invoker,passed,reason",
    [
        (_invoker(lambda row: int(row[0])), True, None),
        (_invoker(lambda row: 0), False, "accuracy 0.100 below the floor 0.85"),
        (_invoker(lambda row: int(row[0]), status=500), False, "10 failed request(s), first: status 500"),
        (_invoker(lambda row: int(row[0]), delay=0.02), False, "above 10.0 ms"),
    ],
    ids=["passes", "accuracy", "errors", "latency"],
)
def test_smoke_test_checks(invoker, passed, reason):
    rows = [[float(i)] + [0.0] * 63 for i in range(10)]
    labels = list(range(10))
    report = run_smoke_test(invoker, rows, labels, min_accuracy=0.85, max_p95_ms=10.0)
    assert report["passed"] is passed
    if reason:
        assert reason in report["reason"]


def test_an_asynchronous_stage_gets_an_async_inference_config(monkeypatch):
    from mlops.compile.compiler import compile_pipelines
    from tests.project import PROJECT, load_config

    monkeypatch.setenv("MLOPS__ENDPOINTS__STAGING__ASYNCHRONOUS__MAX_CONCURRENT_INVOCATIONS", "3")
    monkeypatch.setenv(
        "MLOPS__ENDPOINTS__STAGING__ASYNCHRONOUS__SUCCESS_TOPIC", "arn:aws:sns:eu-west-1:111122223333:ok"
    )
    cfg = load_config("prod")
    d = compile_pipelines(PROJECT, cfg).definition("model-deploy")
    staging = steps_by_name(d)["StagingEndpointConfig"]["Arguments"]
    root = cfg.aws.s3_root
    assert staging["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"] == f"{root}/async/staging/output"
    assert (
        staging["AsyncInferenceConfig"]["OutputConfig"]["S3FailurePath"] == f"{root}/async/staging/failures"
    )
    assert staging["AsyncInferenceConfig"]["OutputConfig"]["NotificationConfig"] == {
        "SuccessTopic": "arn:aws:sns:eu-west-1:111122223333:ok"
    }
    assert staging["AsyncInferenceConfig"]["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 3}
    production = next(s for s in steps_by_name(d)["PromoteToProduction"]["Arguments"]["IfSteps"]
                      if s["Name"] == "ProductionEndpointConfig")["Arguments"]  # fmt: skip
    assert "AsyncInferenceConfig" not in production
    assert validate_definition(d) == []
