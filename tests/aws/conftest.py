"""A real moto server on 127.0.0.1 that boto3 reaches through AWS_ENDPOINT_URL, and a "ci" config for it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import boto3
import pytest
import requests
import yaml

from tests.project import ROOT as PROJECT_ROOT

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account, the documentation example id

CI_OVERLAY = {
    "aws": {
        "region": REGION,
        "role_arn": f"arn:aws:iam::{ACCOUNT}:role/digits-ci-sagemaker-execution",
        "bucket": f"digits-mlops-ci-{ACCOUNT}",
        "prefix": "digits/ci",
        "kms_key_id": "alias/digits-ci",
        "tags": {"project": "digits", "environment": "ci"},
    },
    "data": {"input_uri": f"s3://digits-mlops-ci-{ACCOUNT}/digits/ci/data/raw/"},
    "schedule": {
        "enabled": True,
        "cron": "cron(15 4 ? * TUE *)",
        "timezone": "Europe/Berlin",
        "flexible_window_minutes": 20,
    },
}


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto(moto_endpoint, monkeypatch):
    """Fresh moto state and an environment whose boto3 clients all talk to it."""
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("MLOPS_AWS_MAX_ATTEMPTS", "2")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_endpoint


@pytest.fixture
def ci_config_dir(tmp_path, monkeypatch):
    """config/ copied, plus a ``ci`` overlay that points at moto's account; MLOPS_CONFIG_DIR names it."""
    dest = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", dest)
    overlay = json.loads(json.dumps(CI_OVERLAY))
    base = yaml.safe_load((dest / "base.yaml").read_text())
    suite = base.get("data", {}).get("expectation_suite", "")
    if not (PROJECT_ROOT / suite).is_file():  # the data-quality suite is another colleague's file
        overlay["data"]["expectation_suite"] = "pyproject.toml"
    (dest / "ci.yaml").write_text(yaml.safe_dump(overlay))
    monkeypatch.setenv("MLOPS_CONFIG_DIR", str(dest))
    return dest


@pytest.fixture
def cfg(ci_config_dir):
    from tests.project import load_config

    return load_config("ci", directory=ci_config_dir, environ={})


@pytest.fixture
def aws(moto, cfg):
    from mlops.aws.session import Aws

    return Aws.from_config(cfg)


@pytest.fixture
def account(aws, cfg):
    """What `mlops bootstrap` would have made: the execution role and the artifact bucket."""
    iam = boto3.client("iam")
    iam.create_role(
        RoleName=cfg.aws.role_arn.rsplit("/", 1)[-1],
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "sagemaker.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    boto3.client("s3", region_name=REGION).create_bucket(
        Bucket=cfg.aws.bucket, CreateBucketConfiguration={"LocationConstraint": REGION}
    )
    return aws


def hand_made_definition(cfg, extra_step: bool = False) -> str:
    """A small definition shaped like the SDK's output, with config values in it (threshold, instances)."""
    train = {
        "Name": "train",
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {"TrainingImage": "img:1", "TrainingInputMode": "File"},
            "HyperParameters": {"epochs": str(cfg.steps.train.hyperparameters.epochs)},
            "ResourceConfig": {
                "InstanceCount": {"Get": "Parameters.TrainInstanceCount"},
                "InstanceType": cfg.steps.train.instance_type,
                "VolumeSizeInGB": 30,
            },
            "RoleArn": cfg.aws.role_arn,
        },
    }
    register = {
        "Name": "register",
        "Type": "RegisterModel",
        "Arguments": {"ModelPackageGroupName": cfg.registry.model_package_group},
    }
    fail = {"Name": "fail", "Type": "Fail", "Arguments": {"ErrorMessage": "below threshold"}}
    check = {
        "Name": "check-metric",
        "Type": "Condition",
        "DependsOn": ["train"],
        "Arguments": {
            "Conditions": [
                {
                    "Type": "GreaterThanOrEqualTo",
                    "LeftValue": 0.95,
                    "RightValue": {"Get": "Parameters.Threshold"},
                }
            ],
            "IfSteps": [register],
            "ElseSteps": [fail],
        },
    }
    steps = [train, check]
    if extra_step:
        steps.append({"Name": "notify", "Type": "Fail", "Arguments": {"ErrorMessage": "x"}})
    doc = {
        "Version": "2020-12-01",
        "Metadata": {},
        "Parameters": [
            {"Name": "InputDataUri", "Type": "String", "DefaultValue": cfg.data.input_uri},
            {"Name": "Threshold", "Type": "Float", "DefaultValue": cfg.evaluation.threshold},
            {"Name": "TrainInstanceCount", "Type": "Integer", "DefaultValue": cfg.steps.train.instance_count},
        ],
        "PipelineExperimentConfig": None,
        "Steps": steps,
    }
    return json.dumps(doc, indent=2, sort_keys=True)


@pytest.fixture
def bundle(cfg, tmp_path):
    """A real content-addressed bundle of two files."""
    from mlops.compile.bundles import BundleRegistry

    src = tmp_path / "code"
    (src / "pkg").mkdir(parents=True)
    (src / "train.py").write_text("print('train')\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    return BundleRegistry(cfg.aws.s3_root, staging=tmp_path / "staging").add("train", src)


def names(cfg) -> dict[str, str]:
    return {"model-build": cfg.project.build_pipeline}


ROOT = Path(PROJECT_ROOT)
