"""The compiled model-build definition: structure, config wiring, determinism, offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from mlops.definition.model import parse
from mlops.definition.validate import validate_definition

from .conftest import ROOT


def steps_by_name(definition: dict) -> dict:
    return {name: step.spec for name, step in parse(definition).steps.items()}


def test_steps_types_and_dependencies(compiled_local):
    d = compiled_local.definition("model-build")
    steps = steps_by_name(d)
    assert {n: s["Type"] for n, s in steps.items()} == {
        "Preprocess": "Processing",
        "ValidateData": "Processing",
        "Train": "Training",
        "Evaluate": "Processing",
        "CheckMetric": "Condition",
        "RegisterModel": "RegisterModel",
        "MetricBelowThreshold": "Fail",
    }
    # training waits for the data-quality gate and reads the preprocess outputs
    assert steps["Train"]["DependsOn"] == ["ValidateData"]
    channels = {c["ChannelName"]: c for c in steps["Train"]["Arguments"]["InputDataConfig"]}
    assert channels["train"]["DataSource"]["S3DataSource"]["S3Uri"] == {
        "Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"
    }
    gate_inputs = {i["InputName"] for i in steps["ValidateData"]["Arguments"]["ProcessingInputs"]}
    assert {"train", "validation", "test", "suite", "code"} <= gate_inputs


def test_condition_and_both_branches(compiled_local):
    check = steps_by_name(compiled_local.definition("model-build"))["CheckMetric"]["Arguments"]
    (cond,) = check["Conditions"]
    assert cond["Type"] == "GreaterThanOrEqualTo"
    assert cond["LeftValue"]["Std:JsonGet"]["Path"] == "multiclass_classification_metrics.accuracy.value"
    assert cond["LeftValue"]["Std:JsonGet"]["PropertyFile"] == {
        "Get": "Steps.Evaluate.PropertyFiles.EvaluationReport"
    }
    assert cond["RightValue"] == {"Get": "Parameters.MetricThreshold"}
    assert [s["Name"] for s in check["IfSteps"]] == ["RegisterModel"]
    (fail,) = check["ElseSteps"]
    values = fail["Arguments"]["ErrorMessage"]["Std:Join"]["Values"]
    assert values[0] == "Model not registered: accuracy" and values[2] == "is below the threshold"
    assert values[3] == {"Get": "Parameters.MetricThreshold"}


def test_register_pending_manual_approval_with_metrics(compiled_local):
    d = compiled_local.definition("model-build")
    params = {p["Name"]: p for p in d["Parameters"]}
    assert params["ModelApprovalStatus"]["DefaultValue"] == "PendingManualApproval"
    assert params["MetricThreshold"] == {"Name": "MetricThreshold", "Type": "Float", "DefaultValue": 0.9}
    reg = steps_by_name(d)["RegisterModel"]["Arguments"]
    assert reg["ModelApprovalStatus"] == {"Get": "Parameters.ModelApprovalStatus"}
    assert reg["ModelPackageGroupName"] == "digits-classifier"
    stats = reg["ModelMetrics"]["ModelQuality"]["Statistics"]
    assert stats["ContentType"] == "application/json"
    spec = reg["InferenceSpecification"]
    assert spec["SupportedContentTypes"] == ["application/json", "text/csv"]
    assert spec["Containers"][0]["ModelDataUrl"] == {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert "pytorch-inference" in spec["Containers"][0]["Image"]


def test_training_instance_count_torchrun_spot_and_checkpoints_from_config(compiled_local, compiled_prod):
    for compiled, env in ((compiled_local, "local"), (compiled_prod, "prod")):
        from tests.project import load_config

        cfg = load_config(env)
        train = steps_by_name(compiled.definition("model-build"))["Train"]["Arguments"]
        assert train["ResourceConfig"]["InstanceCount"] == cfg.steps.train.instance_count
        assert train["ResourceConfig"]["InstanceType"] == cfg.steps.train.instance_type
        assert train["EnableManagedSpotTraining"] is True
        assert train["StoppingCondition"]["MaxWaitTimeInSeconds"] == cfg.steps.train.spot.max_wait_s
        assert train["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
        ckpt = train["CheckpointConfig"]["S3Uri"]["Std:Join"]["Values"]  # per execution
        assert ckpt[0].startswith(cfg.aws.s3_root) and ckpt[-1] == {"Get": "Execution.PipelineExecutionId"}
        assert train["HyperParameters"]["epochs"] == str(cfg.steps.train.hyperparameters.epochs)
    bundle = next(b for b in compiled_local.bundles if b.name.endswith("sm_drivers"))
    distributed = json.loads((bundle.source / "distributed.json").read_text())
    assert distributed["process_count_per_node"] == 1
    assert (bundle.source / "distributed_drivers" / "torchrun_driver.py").is_file()
    # nothing in a bundle depends on where the checkout lives
    assert json.loads((bundle.source / "sourcecode.json").read_text())["source_dir"] == "steps/train/code"


def test_metric_regexes_match_the_lines_train_prints(compiled_local):
    metrics = steps_by_name(compiled_local.definition("model-build"))["Train"]["Arguments"][
        "AlgorithmSpecification"
    ]["MetricDefinitions"]
    names = {m["Name"] for m in metrics}
    assert {"train:loss", "validation:loss", "validation:accuracy"} <= names
    source = (ROOT / "steps" / "train" / "code" / "train.py").read_text()
    assert "validation_accuracy=" in source
    line = "epoch=3 train_loss=0.1234 validation_loss=0.2345 validation_accuracy=0.9612"
    found = {m["Name"]: float(re.search(m["Regex"], line).group(1)) for m in metrics}
    assert found["validation:accuracy"] == pytest.approx(0.9612)
    assert found["train:loss"] == pytest.approx(0.1234)


def test_caching_retries_kms_vpc_and_tags(compiled_local, compiled_prod):
    for step in ("Preprocess", "ValidateData", "Train", "Evaluate"):
        raw = steps_by_name(compiled_local.definition("model-build"))[step]
        assert raw["CacheConfig"] == {"Enabled": True, "ExpireAfter": "P30D"}
        kinds = {t for p in raw["RetryPolicies"] for t in p["ExceptionType"]}
        assert {"Step.THROTTLING", "SageMaker.CAPACITY_ERROR"} <= kinds
    prod = steps_by_name(compiled_prod.definition("model-build"))
    pre = prod["Preprocess"]["Arguments"]
    assert pre["ProcessingResources"]["ClusterConfig"]["VolumeKmsKeyId"] == "alias/digits-prod"
    assert pre["ProcessingOutputConfig"]["KmsKeyId"] == "alias/digits-prod"
    assert pre["NetworkConfig"]["VpcConfig"]["Subnets"] == [
        "subnet-0a1b2c3d4e5f60719",
        "subnet-0f1e2d3c4b5a69789",
    ]
    assert {"Key": "environment", "Value": "prod"} in pre["Tags"]
    assert pre["ProcessingInputs"][0]["S3Input"]["S3DataDistributionType"] == "ShardedByS3Key"
    assert pre["ProcessingResources"]["ClusterConfig"]["InstanceCount"] == 2
    train = prod["Train"]["Arguments"]
    assert train["VpcConfig"]["SecurityGroupIds"] == ["sg-0123456789abcdef1"]
    assert train["OutputDataConfig"]["KmsKeyId"] == "alias/digits-prod"
    assert "RetryPolicies" in prod["RegisterModel"]


@pytest.mark.parametrize("env", ["local", "prod"])
def test_compiled_definitions_validate_clean(env, compiled_local, compiled_prod):
    compiled = compiled_local if env == "local" else compiled_prod
    for key in compiled.definitions:
        assert validate_definition(compiled.definition(key)) == []


def test_code_bundles_are_content_addressed(compiled_local):
    for bundle in compiled_local.bundles:
        assert bundle.sha256 in bundle.s3_uri and bundle.s3_uri.endswith("/")
        assert bundle.files and all("__pycache__" not in f for f in bundle.files)
    text = compiled_local.definitions["model-build"]
    assert not re.search(r"20\d{6}-?\d{6}", text), "nothing time-stamped"


def _compile_subprocess(out, env_vars, isolate_network=False):
    cmd = [sys.executable, "-m", "mlops.cli", "compile", "--env", "local", "--out", str(out)]
    if isolate_network and shutil.which("bwrap"):
        # no network at all: any AWS call would fail loudly
        cmd = [
            "bwrap",
            "--bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-net",
            "--die-with-parent",
            *cmd,
        ]
    return subprocess.run(cmd, env=env_vars, capture_output=True, text=True, cwd=ROOT, timeout=240)


@pytest.mark.slow
def test_compile_twice_offline_without_aws_variables_is_byte_identical(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(tmp_path)  # no ~/.aws either
    first, second = tmp_path / "a", tmp_path / "b"
    p1 = _compile_subprocess(first, env, isolate_network=True)
    assert p1.returncode == 0, p1.stderr
    p2 = _compile_subprocess(second, env)
    assert p2.returncode == 0, p2.stderr
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert {str(f) for f in files} >= {"model-build.json", "manifest.json"}
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    manifest = json.loads((first / "manifest.json").read_text())
    for entry in manifest["bundles"]:
        assert (first / entry["tarball"]).is_file()


@pytest.mark.slow
def test_compile_and_validate_leave_the_temp_directory_empty(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "MLOPS_COMPILE_CACHE": str(tmp_path / "cache")}
    for argv in (
        ["compile", "--env", "local", "--out", str(tmp_path / "out")],
        ["validate", "--env", "local"],
    ):
        proc = subprocess.run(
            [sys.executable, "-m", "mlops.cli", *argv],
            env=env,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr
        assert sorted(p.name for p in tmp.iterdir()) == [], argv
    assert (tmp_path / "out" / "manifest.json").is_file()


def test_a_closed_compile_removes_its_staged_bundles(tmp_path):
    from mlops.compile.bundles import BundleRegistry
    from mlops.compile.compiler import Compiled

    (tmp_path / "code.py").write_text("print(1)\n")
    registry = BundleRegistry("s3://bucket/prefix")
    bundle = registry.add("code", tmp_path / "code.py")
    assert registry.staging.name.startswith("mlops-bundles-") and (bundle.source / "code.py").is_file()
    with Compiled({}, {}, [bundle], registry=registry) as compiled:
        assert compiled.bundles[0].source.is_dir()
    assert not registry.staging.exists()
    explicit = BundleRegistry("s3://bucket/prefix", staging=tmp_path / "mine")
    explicit.add("code", tmp_path / "code.py")
    del explicit  # the caller's directory outlives the registry
    assert (tmp_path / "mine").is_dir()


def test_prod_training_encrypts_inter_container_traffic_and_local_does_not(compiled_local, compiled_prod):
    def train(compiled):
        return next(
            s for s in steps_by_name(compiled.definition("model-build")).values() if s["Type"] == "Training"
        )

    assert train(compiled_prod)["Arguments"]["EnableInterContainerTrafficEncryption"] is True
    assert "EnableInterContainerTrafficEncryption" not in train(compiled_local)["Arguments"]
