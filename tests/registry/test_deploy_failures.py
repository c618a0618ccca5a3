"""A deploy that cannot start says why in one line, is recorded as Failed, and starts no endpoint (no training)."""

from __future__ import annotations

import io
import tarfile

import pytest

from mlops.local.approved_deploy import FAILED, DeployError, deploy_model_package
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home
from mlops.serving import supervisor
from steps.preprocess.data import write_digits_csv
from tests.project import PROJECT, load_config

MODEL_URI = "s3://b/models/x/output/model.tar.gz"


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("model_data", "stored", "message"),
    [
        (None, None, "no ModelDataUrl"),
        (MODEL_URI, None, f"{MODEL_URI} is not in the local store"),
        ("not-a-uri", None, "not an S3 URI"),
        (MODEL_URI, b"definitely not gzip", "is not a readable tar.gz"),
        (MODEL_URI, _tar({"model.pth": b"weights"}), "has no code/inference.py"),
    ],
)
def test_unusable_model_data_fails_the_staging_endpoint(tmp_path, model_data, stored, message):
    home = Home.open(tmp_path)
    cfg = load_config("local")
    samples = tmp_path / "digits.csv"
    write_digits_csv(samples)
    S3Store(home.s3_root).put_file(cfg.data.input_uri + "digits.csv", samples)
    if stored is not None:
        S3Store(home.s3_root).put_bytes(MODEL_URI, stored)
    package = home.registry.register(
        "digits-classifier",
        "arn:aws:sagemaker:eu-west-1:123456789012:model-package",
        approval_status="Approved",
        model_data_url=model_data,
        request={},
    )
    seen = []
    record = deploy_model_package(
        package, home=home, project=PROJECT, cfg=cfg, on_progress=lambda *event: seen.append(event)
    )
    assert record.status == FAILED
    assert record.reason.startswith("step StagingEndpoint failed: ") and message in record.reason
    assert "\n" not in record.reason
    assert ("StagingEndpoint", "Executing", "") in seen
    assert ("StagingEndpoint", FAILED) in [event[:2] for event in seen]
    assert record.execution_id
    (stored_record,) = home.deployments.list(package["arn"])
    assert (stored_record["status"], stored_record["reason"]) == (FAILED, record.reason)
    assert stored_record["ended_at"]
    assert supervisor.list_endpoints(home=tmp_path) == []
    assert list((tmp_path / "models").glob("*")) == []  # nothing half-unpacked


def test_unknown_target_stage_is_refused(tmp_path):
    home = Home.open(tmp_path)
    with pytest.raises(DeployError, match="target stage 'canary': use one of staging, production"):
        deploy_model_package(
            {"arn": "a"}, home=home, project=PROJECT, cfg=load_config("local"), target_stage="canary"
        )
