"""ClarifyCheck steps run locally: Clarify's analysis.json from a real dataset (bias metrics checked against
values computed here by their documented formulas), SHAP values of a real served model, and the drift check
against a baseline failing with the violated metric named."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest

from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home
from tests.archives import targz

HEADERS = ["approved", "group", "x0", "x1", "x2"]
ROLE = "arn:aws:iam::111122223333:role/SageMakerRole"
IMAGE = "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing:1.0"
# code/inference.py handlers: a linear model of the features (group, x0, x1, x2): 3*x0 - 2*x1 + 0*x2
INFERENCE = textwrap.dedent(
    """
    def model_fn(model_dir):
        def model(x):
            return (3 * x[:, 1] - 2 * x[:, 2] + 0 * x[:, 3]).reshape(-1, 1)
        return model
    """
)


def frame(n_a: int, n_d: int, q_a: float, q_d: float, seed: int = 0) -> pd.DataFrame:
    """``n_a`` rows of group 0 and ``n_d`` of group 1 (the facet), with those shares of approved labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, n, q in ((0, n_a, q_a), (1, n_d, q_d)):
        positives = round(n * q)
        for i in range(n):
            rows.append([int(i < positives), group, *rng.normal(size=3).round(4)])
    return pd.DataFrame(rows, columns=HEADERS)


def put_csv(home: Home, uri: str, df: pd.DataFrame) -> None:
    from mlops.local.s3store import S3Store

    S3Store(home.s3_root).put_bytes(uri, df.to_csv(header=False, index=False).encode())


def check_step(name: str, check_type: str, config_uri: str, **fields) -> dict:
    return {
        "Name": name,
        "Type": "ClarifyCheck",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}
            },
            "AppSpecification": {"ImageUri": IMAGE},
            "RoleArn": ROLE,
            "ProcessingInputs": [
                {"InputName": "analysis_config", "S3Input": {
                    "S3Uri": config_uri, "LocalPath": "/opt/ml/processing/input/config",
                    "S3DataType": "S3Prefix", "S3InputMode": "File"}},
                {"InputName": "dataset", "S3Input": {
                    "S3Uri": {"Get": "Parameters.DataUri"}, "LocalPath": "/opt/ml/processing/input/data",
                    "S3DataType": "S3Prefix", "S3InputMode": "File"}},
            ],
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "analysis_result", "S3Output": {
                "S3Uri": {"Std:Join": {"On": "/", "Values": [
                    "s3://b/clarify", {"Get": "Execution.PipelineExecutionId"}, name.lower()]}},
                "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]},
        },
        "CheckType": check_type,
        "ModelPackageGroupName": "clarify-group",
        "SkipCheck": {"Get": "Parameters.Skip"},
        "FailOnViolation": True,
        "RegisterNewBaseline": {"Get": "Parameters.Register"},
        "SuppliedBaselineConstraints": {"Get": "Parameters.Baseline"},
        **fields,
    }  # fmt: skip


def definition(*steps: dict) -> dict:
    return {
        "Version": "2020-12-01",
        "Parameters": [
            {"Name": "DataUri", "Type": "String", "DefaultValue": "s3://b/data/train"},
            {"Name": "Skip", "Type": "Boolean", "DefaultValue": True},
            {"Name": "Register", "Type": "Boolean", "DefaultValue": True},
            {"Name": "Baseline", "Type": "String", "DefaultValue": ""},
        ],
        "Steps": list(steps),
    }


BIAS_CONFIG = {
    "dataset_type": "text/csv", "headers": HEADERS, "label": "approved", "label_values_or_threshold": [1],
    "facet": [{"name_or_index": "group", "value_or_threshold": [1]}],
    "methods": {"pre_training_bias": {"methods": "all"}, "report": {"name": "report", "title": "Analysis Report"}},
}  # fmt: skip


@pytest.fixture
def home(tmp_path):
    h = Home.open(tmp_path / "home")
    from mlops.local.s3store import S3Store

    S3Store(h.s3_root).put_bytes("s3://b/config/bias/analysis_config.json", json.dumps(BIAS_CONFIG).encode())
    return h


def metrics(analysis: dict, section: str) -> dict[str, float]:
    (group,) = analysis[section]["facets"]["group"]
    assert group["value_or_threshold"] == "1"
    return {m["name"]: m["value"] for m in group["metrics"]}


def test_data_bias_metrics_and_a_drifted_dataset_failing_the_check_with_the_metric_named(home):
    put_csv(home, "s3://b/data/train/part-0.csv", frame(120, 80, 0.5, 0.4))
    steps = definition(check_step("DataBias", "DATA_BIAS", "s3://b/config/bias/analysis_config.json"))

    first = run_definition(steps, home=home)
    assert first.status == "Succeeded", first.failure_reason
    props = first.steps["DataBias"].properties
    calculated = props["CalculatedBaselineConstraints"]
    assert calculated == f"s3://b/clarify/{first.id}/databias/analysis.json"
    assert props["BaselineUsedForDriftCheckConstraints"] == calculated  # RegisterNewBaseline
    assert props["CheckType"] == "DATA_BIAS" and props["SkipCheck"] is True
    analysis = json.loads(home.s3_root.joinpath(calculated[5:]).read_text())
    section = analysis["pre_training_bias_metrics"]
    assert section["label"] == "approved" and section["label_value_or_threshold"] == "1"
    got = metrics(analysis, "pre_training_bias_metrics")
    # independently: n_a = 120, n_d = 80, q_a = 60/120, q_d = 32/80
    assert got["CI"] == pytest.approx((120 - 80) / 200)
    assert got["DPL"] == pytest.approx(60 / 120 - 32 / 80)
    p_a, p_d = np.array([0.5, 0.5]), np.array([0.4, 0.6])
    assert got["KL"] == pytest.approx(float((p_a * np.log(p_a / p_d)).sum()))
    assert got["TVD"] == pytest.approx(0.1) and got["KS"] == pytest.approx(0.1)
    assert "CDDL" not in got  # no group_variable

    # the same data against its own baseline passes; a drifted dataset fails, naming the metric
    again = run_definition(
        steps, home=home, params={"Skip": False, "Register": False, "Baseline": calculated}
    )
    assert again.status == "Succeeded", again.failure_reason
    assert again.steps["DataBias"].properties["BaselineUsedForDriftCheckConstraints"] == calculated

    # without a supplied baseline, the latest Approved version of the group lends its DriftCheckBaselines
    drift_baselines = {
        "Bias": {"PreTrainingConstraints": {"S3Uri": calculated, "ContentType": "application/json"}}
    }
    home.registry.register(
        "clarify-group", "arn:aws:sagemaker:us-east-1:111122223333:model-package", approval_status="Approved",
        request={"ModelPackageGroupName": "clarify-group", "DriftCheckBaselines": drift_baselines},
    )  # fmt: skip
    from_registry = run_definition(steps, home=home, params={"Skip": False, "Register": False})
    assert from_registry.status == "Succeeded", from_registry.failure_reason
    assert from_registry.steps["DataBias"].properties["BaselineUsedForDriftCheckConstraints"] == calculated

    put_csv(home, "s3://b/data/drifted/part-0.csv", frame(170, 30, 0.5, 0.2))
    drifted = run_definition(
        steps, home=home,
        params={"Skip": False, "Register": False, "Baseline": calculated, "DataUri": "s3://b/data/drifted"},
    )  # fmt: skip
    assert drifted.status == "Failed"
    reason = drifted.steps["DataBias"].failure_reason
    assert "DATA_BIAS drift check failed" in reason, reason
    assert "CI of facet group=1" in reason and "DPL of facet group=1" in reason, reason
    report = home.s3_root / f"b/clarify/{drifted.id}/databias/constraint_violations.json"
    names = {v["metric_name"] for v in json.loads(report.read_text())["violations"]}
    assert {"CI", "DPL"} <= names


def test_a_check_without_any_baseline_fails_before_comparing(home):
    put_csv(home, "s3://b/data/train/part-0.csv", frame(50, 50, 0.5, 0.5))
    steps = definition(check_step("DataBias", "DATA_BIAS", "s3://b/config/bias/analysis_config.json"))
    record = run_definition(steps, home=home, params={"Skip": False, "Register": False})
    assert record.status == "Failed"
    reason = record.steps["DataBias"].failure_reason
    assert "no baseline constraints" in reason and "clarify-group" in reason, reason


def test_model_explainability_and_model_bias_score_the_served_model(home, bwrap_mode):
    from mlops.local.s3store import S3Store

    store = S3Store(home.s3_root)
    data = frame(20, 20, 0.5, 0.5, seed=3)
    put_csv(home, "s3://b/data/train/part-0.csv", data)
    store.put_bytes("s3://b/model/model.tar.gz", targz({"code/inference.py": INFERENCE}))
    baseline_row = [0.0, 0.0, 0.0, 0.0]
    shap_config = {
        "dataset_type": "text/csv", "headers": HEADERS, "label": "approved",
        "methods": {"shap": {"baseline": [baseline_row], "num_samples": 16, "agg_method": "mean_abs",
                             "save_local_shap_values": True, "seed": 123}},
        "predictor": {"instance_type": "ml.m5.xlarge", "initial_instance_count": 1},
    }  # fmt: skip
    bias_config = {
        **BIAS_CONFIG, "probability_threshold": 0.0,
        "methods": {"post_training_bias": {"methods": ["DPPL", "DI", "AD", "RD"]}},
        "predictor": {"instance_type": "ml.m5.xlarge", "initial_instance_count": 1},
    }  # fmt: skip
    store.put_bytes("s3://b/config/shap/analysis_config.json", json.dumps(shap_config).encode())
    store.put_bytes("s3://b/config/mbias/analysis_config.json", json.dumps(bias_config).encode())
    model = {
        "Name": "Model",
        "Type": "Model",
        "Arguments": {"ExecutionRoleArn": ROLE, "PrimaryContainer": {
            "Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-model:1",
            "ModelDataUrl": "s3://b/model/model.tar.gz"}},
    }  # fmt: skip
    name = {"Get": "Steps.Model.ModelName"}
    steps = definition(
        model,
        check_step(
            "Explain", "MODEL_EXPLAINABILITY", "s3://b/config/shap/analysis_config.json", ModelName=name
        ),
        check_step("ModelBias", "MODEL_BIAS", "s3://b/config/mbias/analysis_config.json", ModelName=name),
    )
    record = run_definition(steps, home=home)
    assert record.status == "Succeeded", (record.failure_reason, {
        k: s.failure_reason for k, s in record.steps.items()})  # fmt: skip

    out = home.s3_root / f"b/clarify/{record.id}/explain"
    shap_section = json.loads((out / "analysis.json").read_text())["explanations"]["kernel_shap"]
    global_values = shap_section["label0"]["global_shap_values"]
    assert list(global_values) == ["group", "x0", "x1", "x2"]  # every feature but the label
    # linear model against a zero baseline: exact SHAP = weight * value; mean |.| orders x0 > x1 > x2 = 0
    assert global_values["x0"] > global_values["x1"] > global_values["x2"] == pytest.approx(0, abs=1e-6)
    assert global_values["group"] == pytest.approx(0, abs=1e-6)
    assert global_values["x0"] == pytest.approx(3 * data["x0"].abs().mean(), rel=1e-3)
    assert shap_section["label0"]["expected_value"] == pytest.approx(0.0, abs=1e-9)
    local = pd.read_csv(out / "explanations_shap" / "out.csv")
    # the sign follows the weight: x0 pushes up where x0 > 0, x1 pushes down where x1 > 0
    assert np.allclose(local["x0"], 3 * data["x0"], atol=1e-3)
    assert np.allclose(local["x1"], -2 * data["x1"], atol=1e-3)

    analysis = json.loads((home.s3_root / f"b/clarify/{record.id}/modelbias/analysis.json").read_text())
    got = metrics(analysis, "post_training_bias_metrics")
    assert set(got) == {"DPPL", "DI", "AD", "RD"}
    score = 3 * data["x0"] - 2 * data["x1"]
    yhat, y, d = (score > 0).to_numpy(), data["approved"].to_numpy() == 1, data["group"].to_numpy() == 1
    q_a, q_d = yhat[~d].mean(), yhat[d].mean()
    assert got["DPPL"] == pytest.approx(q_a - q_d)
    assert got["DI"] == pytest.approx(q_d / q_a)
    assert got["AD"] == pytest.approx((yhat[~d] == y[~d]).mean() - (yhat[d] == y[d]).mean())
    recall = lambda m: (yhat & y & m).sum() / (y & m).sum()  # noqa: E731
    assert got["RD"] == pytest.approx(recall(~d) - recall(d))
