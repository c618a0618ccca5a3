"""``mlops models ... --target aws`` against moto's server on 127.0.0.1 (a real HTTP server, real boto3).

moto implements ListModelPackages, DescribeModelPackage and UpdateModelPackage, so nothing here is stubbed.
Every request the registry builds is also checked against botocore's service model (table below).
"""

from __future__ import annotations

import json

import boto3
import pytest

from mlops.cli.main import main
from mlops.registry.aws import RequestInvalid, list_request, update_request, validate_request
from tests.aws.conftest import REGION, cfg, ci_config_dir, moto, moto_endpoint  # noqa: F401  (fixtures)

GROUP = "digits-classifier"


@pytest.fixture
def registry(moto, ci_config_dir):  # noqa: F811
    """Three versions in moto's registry, as the model-build pipeline's RegisterModel step leaves them."""
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model_package_group(ModelPackageGroupName=GROUP, ModelPackageGroupDescription="digits")
    arns = []
    for n in range(3):
        arns.append(
            sm.create_model_package(
                ModelPackageGroupName=GROUP,
                ModelPackageDescription=f"candidate {n + 1}",
                ModelApprovalStatus="PendingManualApproval",
                InferenceSpecification={
                    "Containers": [{"Image": "img:1", "ModelDataUrl": f"s3://b/models/{n + 1}/model.tar.gz"}],
                    "SupportedContentTypes": ["application/json"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
            )["ModelPackageArn"]
        )
    return sm, arns


def cli(capsys, *args) -> tuple[int, str]:
    code = main(["models", *args, "--target", "aws", "--env", "ci"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_list_and_show_read_sagemakers_registry(registry, capsys):
    _, arns = registry
    code, out = cli(capsys, "list", "--group", GROUP, "--format", "json")
    assert code == 0, out
    rows = json.loads(out)
    assert [(r["version"], r["approval_status"], r["arn"]) for r in rows] == [
        (n + 1, "PendingManualApproval", arn) for n, arn in enumerate(arns)
    ]
    code, out = cli(capsys, "show", f"{GROUP}/2", "--format", "json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["arn"] == arns[1]
    assert shown["model_data_url"] == "s3://b/models/2/model.tar.gz"
    code, out = cli(capsys, "show", "9", "--group", GROUP)
    assert code == 2
    assert "digits-classifier/9: not in SageMaker's model registry (eu-west-1)" in out


def test_approve_and_reject_update_the_package_with_the_reason(registry, capsys):
    sm, arns = registry
    code, out = cli(capsys, "approve", f"{GROUP}/1", "--reason", "beats v0 on the holdout", "--by", "alice")
    assert code == 0, out
    assert "PendingManualApproval -> Approved" in out
    described = sm.describe_model_package(ModelPackageName=arns[0])
    assert described["ModelApprovalStatus"] == "Approved"
    assert described["ApprovalDescription"] == "beats v0 on the holdout"
    assert described["CustomerMetadataProperties"] == {"mlops:status-changed-by": "alice"}

    code, out = cli(capsys, "approve", arns[0], "--reason", "again")
    assert code == 0, out
    assert "already Approved; nothing to do" in out
    assert (
        sm.describe_model_package(ModelPackageName=arns[0])["ApprovalDescription"]
        == "beats v0 on the holdout"
    )

    code, out = cli(capsys, "reject", "3", "--group", GROUP, "--reason", "drift in the input data")
    assert code == 0, out
    code, out = cli(capsys, "list", "--group", GROUP, "--status", "Rejected", "--format", "json")
    assert [r["version"] for r in json.loads(out)] == [3]

    code, out = cli(capsys, "approve", f"{GROUP}/3", "--reason", "drift was a false alarm")
    assert code == 2
    assert "was Rejected; approving it needs --force" in out
    assert sm.describe_model_package(ModelPackageName=arns[2])["ModelApprovalStatus"] == "Rejected"
    code, out = cli(capsys, "approve", f"{GROUP}/3", "--reason", "drift was a false alarm", "--force")
    assert code == 0, out
    code, out = cli(capsys, "show", f"{GROUP}/3", "--format", "json")
    (entry,) = json.loads(out)["audit_trail"]
    assert (entry["to_status"], entry["reason"]) == ("Approved", "drift was a false alarm")


def test_a_missing_package_arn_is_one_line(registry, capsys):
    _, arns = registry
    missing = arns[0].rsplit("/", 1)[0] + "/42"
    code, out = cli(capsys, "approve", missing, "--reason", "x")
    assert code != 0
    assert missing in out
    assert len(out.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        ("ListModelPackages", list_request(GROUP, "Approved")),
        ("ListModelPackages", list_request(None, None)),
        ("DescribeModelPackage", {"ModelPackageName": f"arn:aws:sagemaker:{REGION}:1:model-package/{GROUP}/1"}),
        ("UpdateModelPackage", update_request(f"arn:aws:sagemaker:{REGION}:1:model-package/g/1", "Approved", "r" * 2000, "bob")),
    ],
)  # fmt: skip
def test_requests_are_valid_for_the_service_model(operation, params):
    client = boto3.client("sagemaker", region_name=REGION)
    assert validate_request(client, operation, params) is params


@pytest.mark.parametrize(
    ("operation", "params", "message"),
    [
        ("UpdateModelPackage", {"ModelApprovalStatus": "Approved"}, "Missing required parameter"),
        ("UpdateModelPackage", {"ModelPackageArn": "a", "ModelApprovalStatus": 3}, "Invalid type"),
        ("ListModelPackages", {"ModelApprovalStatus": "Approved", "Bogus": 1}, "Unknown parameter"),
        ("UpdateModelPackage", update_request("a", "Approved", "", "b") | {"ApprovalDescription": 5}, "Invalid type"),
    ],
)  # fmt: skip
def test_invalid_requests_are_refused_before_sending(operation, params, message):
    client = boto3.client("sagemaker", region_name=REGION)
    with pytest.raises(RequestInvalid, match=message):
        validate_request(client, operation, params)
