"""A multi-model stage of the model-deploy pipeline: config, the compiled definition, the publish job."""

from __future__ import annotations

import json

import pytest
import yaml

from mlops.definition.validate import validate_definition
from mlops.errors import ConfigError
from steps.multi_model.code.publish_model import PublishError, publish, target_model
from tests.project import load_config

from .test_compile import steps_by_name

MME = {"MLOPS__ENDPOINTS__STAGING__MODE": "multi-model"}


def _deploy(env: str, environ: dict[str, str], monkeypatch) -> dict:
    from mlops.compile.compiler import compile_pipelines
    from tests.project import PROJECT

    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    return compile_pipelines(PROJECT, load_config(env)).definition("model-deploy")


def _if_steps(d: dict) -> dict:
    return {s["Name"]: s for s in steps_by_name(d)["PromoteToProduction"]["Arguments"]["IfSteps"]}


# ---- config -------------------------------------------------------------------------------------------


def test_the_mode_defaults_to_real_time_and_asynchronous_settings_still_mean_async():
    cfg = load_config("prod")
    assert (cfg.endpoints.staging.mode, cfg.endpoints.production.mode) == ("real-time", "real-time")
    cfg = load_config(
        "prod", environ={"MLOPS__ENDPOINTS__STAGING__ASYNCHRONOUS__MAX_CONCURRENT_INVOCATIONS": "3"}
    )
    assert cfg.endpoints.staging.mode == "async"
    cfg = load_config("prod", environ={"MLOPS__ENDPOINTS__STAGING__MODE": "async"})
    assert cfg.endpoints.staging.asynchronous.max_concurrent_invocations == 4  # the defaults
    assert load_config("prod", environ=MME).endpoints.staging.mode == "multi-model"


BAD_MODES = [
    (
        {"mode": "multi-model", "asynchronous": {"max_concurrent_invocations": 2}},
        "config/bad.yaml: endpoints.staging.asynchronous: mode multi-model takes no asynchronous settings "
        "(remove them, or set mode: async)",
    ),
    (
        {"mode": "real-time", "asynchronous": {}},
        "config/bad.yaml: endpoints.staging.asynchronous: mode real-time takes no asynchronous settings "
        "(remove them, or set mode: async)",
    ),
    (
        {"mode": "serverless"},
        "config/bad.yaml: endpoints.staging.mode: must be one of 'real-time', 'async' or 'multi-model' "
        "(got 'serverless')",
    ),
]


@pytest.mark.parametrize("staging,message", BAD_MODES, ids=[m["mode"] for m, _ in BAD_MODES])
def test_contradicting_mode_and_settings_give_one_line_naming_the_field(config_dir, staging, message):
    overlay = yaml.safe_load((config_dir / "local.yaml").read_text())
    overlay["endpoints"]["staging"] = staging
    (config_dir / "bad.yaml").write_text(yaml.safe_dump(overlay))
    with pytest.raises(ConfigError) as err:
        load_config("bad")
    assert str(err.value) == message


def test_an_environment_variable_that_contradicts_names_the_variable():
    with pytest.raises(ConfigError) as err:
        load_config(
            "local", environ={**MME, "MLOPS__ENDPOINTS__STAGING__ASYNCHRONOUS__SUCCESS_TOPIC": "arn:x"}
        )
    assert str(err.value) == (
        "$MLOPS__ENDPOINTS__STAGING__ASYNCHRONOUS__SUCCESS_TOPIC: endpoints.staging.asynchronous: mode "
        "multi-model takes no asynchronous settings (remove them, or set mode: async)"
    )


# ---- the compiled definition --------------------------------------------------------------------------


def test_a_multi_model_staging_stage_publishes_the_artifact_and_creates_a_multi_model_model(monkeypatch):
    d = _deploy("prod", MME, monkeypatch)
    steps = steps_by_name(d)
    assert [s["Name"] for s in d["Steps"]] == [
        "CreateModel", "PublishMultiModelArtifact", "CreateMultiModel", "StagingEndpointConfig",
        "StagingEndpoint", "SmokeTest", "PromoteToProduction",
    ]  # fmt: skip
    prefix = "s3://digits-mlops-prod-123456789012/digits/prod/multi-model/digits-classifier/"
    publish_step = steps["PublishMultiModelArtifact"]
    assert publish_step["Type"] == "Processing"
    assert publish_step["Arguments"]["AppSpecification"]["ContainerArguments"] == [
        "--model-package-arn", {"Get": "Parameters.ModelPackageArn"}, "--prefix", prefix,
    ]  # fmt: skip
    assert [p["PropertyFileName"] for p in publish_step["PropertyFiles"]] == ["TargetModel"]

    model = steps["CreateMultiModel"]
    assert model["DependsOn"] == ["PublishMultiModelArtifact"]
    container = model["Arguments"]["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == prefix
    assert container["Image"].endswith("/pytorch-inference:2.5-cpu-py311")
    assert "ModelPackageName" not in container  # MultiModel takes an image and a prefix, not a package
    assert model["Arguments"]["VpcConfig"]["Subnets"]  # prod's network, as the package-based model has

    staging = steps["StagingEndpointConfig"]["Arguments"]["ProductionVariants"][0]
    assert staging["ModelName"] == {"Get": "Steps.CreateMultiModel.ModelName"}
    production = _if_steps(d)["ProductionEndpointConfig"]["Arguments"]["ProductionVariants"][0]
    assert production["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}  # production stays real-time

    args = steps["SmokeTest"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    at = args.index("--target-model")
    assert args[at + 1] == {
        "Std:JsonGet": {
            "Path": "TargetModel",
            "PropertyFile": {"Get": "Steps.PublishMultiModelArtifact.PropertyFiles.TargetModel"},
        }
    }
    assert validate_definition(d) == []


def test_both_stages_multi_model_share_one_model_and_no_package_model(monkeypatch):
    d = _deploy("dev", {**MME, "MLOPS__ENDPOINTS__PRODUCTION__MODE": "multi-model"}, monkeypatch)
    assert [s["Name"] for s in d["Steps"]][:2] == ["PublishMultiModelArtifact", "CreateMultiModel"]
    assert "CreateModel" not in steps_by_name(d)
    production = _if_steps(d)["ProductionEndpointConfig"]["Arguments"]["ProductionVariants"][0]
    assert production["ModelName"] == {"Get": "Steps.CreateMultiModel.ModelName"}
    assert validate_definition(d) == []


def test_real_time_stages_compile_as_before(monkeypatch):
    d = _deploy("prod", {}, monkeypatch)
    assert "PublishMultiModelArtifact" not in steps_by_name(d)
    args = steps_by_name(d)["SmokeTest"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert "--target-model" not in args


def test_a_multi_model_compile_is_deterministic(monkeypatch):
    first = json.dumps(_deploy("staging", MME, monkeypatch), sort_keys=True)
    assert json.dumps(_deploy("staging", MME, monkeypatch), sort_keys=True) == first


# ---- the publish job's code ---------------------------------------------------------------------------


class _Registry:
    def __init__(self, status="Approved", url="s3://artifacts/train/output/model.tar.gz"):
        self.status, self.url = status, url

    def describe_model_package(self, ModelPackageName):  # noqa: N803 (boto3's argument name)
        return {
            "ModelPackageArn": ModelPackageName,
            "ModelApprovalStatus": self.status,
            "InferenceSpecification": {"Containers": [{"Image": "img", "ModelDataUrl": self.url}]},
        }


ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/digits-classifier/7"


def test_publish_copies_the_artifact_to_its_target_model_key():
    import boto3
    from moto import mock_aws

    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        for bucket in ("artifacts", "models"):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="artifacts", Key="train/output/model.tar.gz", Body=b"archive")
        result = publish(ARN, "s3://models/multi-model/digits-classifier/", _Registry(), s3)
        body = s3.get_object(Bucket="models", Key="multi-model/digits-classifier/v7.tar.gz")["Body"].read()
    assert body == b"archive"
    assert result["TargetModel"] == "v7.tar.gz" == target_model(ARN)
    assert result["Source"] == "s3://artifacts/train/output/model.tar.gz"


@pytest.mark.parametrize(
    "arn,prefix,registry,message",
    [
        (ARN, "s3://models/mme", _Registry(), "must end with '/'"),
        (ARN, "s3://models/mme/", _Registry(status="Rejected"), "is Rejected, not Approved"),
        ("arn:aws:sagemaker:eu-west-1:1:model-package/digits", "s3://m/", _Registry(), "not a versioned"),
        (ARN, "s3://models/mme/", _Registry(url=None), "no ModelDataUrl to publish"),
    ],
)
def test_publish_refuses_what_it_cannot_publish(arn, prefix, registry, message):
    with pytest.raises(PublishError, match=message):
        publish(arn, prefix, registry, s3=None)
