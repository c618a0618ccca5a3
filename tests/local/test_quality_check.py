"""QualityCheck steps (DATA_QUALITY, MODEL_QUALITY), built offline with the real SageMaker SDK, run locally:
the baseline files, the properties a RegisterModel step reads, the drift check against the registered
baseline, and the violations that fail the step."""

from __future__ import annotations

import copy
import json
import statistics as pystats

import pandas as pd
import pytest

from mlops.definition.validate import validate_definition
from mlops.errors import DefinitionError
from mlops.local.check import check
from mlops.local.monitor import model_quality
from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home
from tests.project import ROOT as PROJECT_ROOT
from tests.sdk_offline import store_session

ROLE = "arn:aws:iam::111122223333:role/R"
AGES = [23, 35, 41, 29, 52, 38, 27, 45]
INCOMES = [52000.5, 61000.0, None, 48000.25, 75000.0, 58000.0, 45000.5, 66000.75]
CITIES = ["paris", "lyon", "nice", "paris", "lyon", "paris", "nice", "lyon"]
# prediction, probability of 1, label
PREDICTIONS = [
    (1, 0.9, 1), (0, 0.2, 0), (1, 0.7, 0), (0, 0.4, 1), (1, 0.8, 1),
    (1, 0.6, 1), (0, 0.1, 0), (0, 0.3, 0), (1, 0.95, 1), (0, 0.45, 0),
]  # fmt: skip


def csv(header: str, rows) -> bytes:
    lines = [header] + [",".join("" if v is None else str(v) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def sdk_definition(tmp_path_factory) -> dict:
    """DQ and MQ QualityCheckSteps from the SDK, then a RegisterModel step reading their properties."""
    from mlops.local.s3store import S3Store

    session = store_session(S3Store(tmp_path_factory.mktemp("sdk") / "s3"))
    from sagemaker.core.model_monitor.dataset_format import DatasetFormat
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.parameters import ParameterBoolean, ParameterString
    from sagemaker.mlops.workflow.check_job_config import CheckJobConfig
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.quality_check_step import (
        DataQualityCheckConfig,
        ModelQualityCheckConfig,
        QualityCheckStep,
    )

    params = {
        "TrainData": ParameterString("TrainData", default_value="s3://b/data/train"),
        "PredData": ParameterString("PredData", default_value="s3://b/data/pred"),
        "SkipDQ": ParameterBoolean("SkipDQ", default_value=True),
        "RegisterDQ": ParameterBoolean("RegisterDQ", default_value=True),
        "SkipMQ": ParameterBoolean("SkipMQ", default_value=True),
        "RegisterMQ": ParameterBoolean("RegisterMQ", default_value=True),
        "MQConstraints": ParameterString("MQConstraints", default_value=""),
    }
    job = CheckJobConfig(role=ROLE, instance_count=1, instance_type="ml.m5.large", sagemaker_session=session)

    def out(name):
        return Join(on="/", values=["s3://b/checks", ExecutionVariables.PIPELINE_EXECUTION_ID, name])

    dq = QualityCheckStep(
        name="DQ",
        quality_check_config=DataQualityCheckConfig(
            baseline_dataset=params["TrainData"], dataset_format=DatasetFormat.csv(header=True),
            output_s3_uri=out("dq"),
        ),
        check_job_config=job, skip_check=params["SkipDQ"], register_new_baseline=params["RegisterDQ"],
        model_package_group_name="g",
    )  # fmt: skip
    mq = QualityCheckStep(
        name="MQ",
        quality_check_config=ModelQualityCheckConfig(
            baseline_dataset=params["PredData"], dataset_format=DatasetFormat.csv(header=True),
            output_s3_uri=out("mq"), problem_type="BinaryClassification", inference_attribute="prediction",
            probability_attribute="probability", ground_truth_attribute="label",
        ),
        check_job_config=job, skip_check=params["SkipMQ"], register_new_baseline=params["RegisterMQ"],
        model_package_group_name="g", supplied_baseline_constraints=params["MQConstraints"],
    )  # fmt: skip
    doc = json.loads(
        Pipeline(
            name="p", parameters=list(params.values()), steps=[dq, mq], sagemaker_session=session
        ).definition()
    )

    def files(step, prefix):
        return {
            "Statistics": {
                "ContentType": "application/json",
                "S3Uri": {"Get": f"Steps.{step}.{prefix}Statistics"},
            },
            "Constraints": {
                "ContentType": "application/json",
                "S3Uri": {"Get": f"Steps.{step}.{prefix}Constraints"},
            },
        }

    doc["Steps"].append({
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": "g",
            "ModelApprovalStatus": "Approved",
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["text/csv"],
            },
            "ModelMetrics": {
                "ModelDataQuality": files("DQ", "CalculatedBaseline"),
                "ModelQuality": files("MQ", "CalculatedBaseline"),
            },
            "DriftCheckBaselines": {
                "ModelDataQuality": files("DQ", "BaselineUsedForDriftCheck"),
                "ModelQuality": files("MQ", "BaselineUsedForDriftCheck"),
            },
        },
    })  # fmt: skip
    return doc


@pytest.fixture
def home(tmp_path):
    h = Home.open(tmp_path / "home")
    h.s3_root.mkdir(parents=True, exist_ok=True)
    put(h, "s3://b/data/train/part-0.csv", csv("age,income,city", zip(AGES, INCOMES, CITIES, strict=True)))
    put(h, "s3://b/data/pred/pred.csv", csv("prediction,probability,label", PREDICTIONS))
    return h


def put(home: Home, uri: str, data: bytes) -> None:
    path = home.s3_root / uri.removeprefix("s3://")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def read(home: Home, uri: str):
    return json.loads((home.s3_root / uri.removeprefix("s3://")).read_text())


def binary_metrics():
    """Accuracy, precision, recall and AUC of PREDICTIONS, counted by hand."""
    tp = sum(1 for p, _, y in PREDICTIONS if p == 1 and y == 1)
    fp = sum(1 for p, _, y in PREDICTIONS if p == 1 and y == 0)
    fn = sum(1 for p, _, y in PREDICTIONS if p == 0 and y == 1)
    tn = sum(1 for p, _, y in PREDICTIONS if p == 0 and y == 0)
    pos = [pr for _, pr, y in PREDICTIONS if y == 1]
    neg = [pr for _, pr, y in PREDICTIONS if y == 0]
    auc = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg) / (len(pos) * len(neg))
    return {"accuracy": (tp + tn) / 10, "precision": tp / (tp + fp), "recall": tp / (tp + fn), "auc": auc}, (
        tp, fp, fn, tn,
    )  # fmt: skip


def test_check_lists_quality_steps_as_runnable_and_validate_knows_their_properties(sdk_definition):
    result = check(sdk_definition)
    assert result.runnable, result.blockers
    views = {v.name: v for v in result.steps}
    assert views["DQ"].runtime == "the local Model Monitor analyzer (pandas, in the executor): data quality"
    assert views["MQ"].image.endswith("sagemaker-model-monitor-analyzer")
    findings = [str(f) for f in validate_definition(sdk_definition)]
    assert not [f for f in findings if f.startswith(("DQ", "MQ", "Register"))], findings
    typo = copy.deepcopy(sdk_definition)
    typo["Steps"][-1]["Arguments"]["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"] = {
        "Get": "Steps.MQ.CalculatedStatistics"
    }
    assert any(
        "'Steps.MQ.CalculatedStatistics': a QualityCheck step's properties are CalculatedBaselineStatistics"
        in f
        for f in map(str, validate_definition(typo))
    )


def test_baselines_written_and_properties_reach_register_model(sdk_definition, home):
    record = run_definition(sdk_definition, home=home)
    assert record.status == "Succeeded", record.failure_reason
    dq, mq = record.steps["DQ"].properties, record.steps["MQ"].properties
    prefix = f"s3://b/checks/{record.id}"
    assert dq["CalculatedBaselineStatistics"] == f"{prefix}/dq/statistics.json"
    assert dq["CalculatedBaselineConstraints"] == f"{prefix}/dq/constraints.json"
    # RegisterNewBaseline: the drift-check baseline is the new one
    assert dq["BaselineUsedForDriftCheckConstraints"] == dq["CalculatedBaselineConstraints"]
    assert mq["BaselineUsedForDriftCheckStatistics"] == f"{prefix}/mq/statistics.json"
    assert "ViolationReport" not in dq  # SkipCheck

    stats = read(home, dq["CalculatedBaselineStatistics"])
    assert stats["dataset"]["item_count"] == 8
    features = {f["name"]: f for f in stats["features"]}
    assert {n: f["inferred_type"] for n, f in features.items()} == {
        "age": "Integral", "income": "Fractional", "city": "String",
    }  # fmt: skip
    age = features["age"]["numerical_statistics"]
    assert age["common"] == {"num_present": 8, "num_missing": 0}
    assert age["mean"] == pytest.approx(pystats.mean(AGES))
    assert age["std_dev"] == pytest.approx(pystats.pstdev(AGES))
    assert (age["min"], age["max"], age["sum"]) == (23, 52, sum(AGES))
    assert sum(b["count"] for b in age["distribution"]["kll"]["buckets"]) == 8
    assert len(age["distribution"]["kll"]["buckets"]) == 10
    income = features["income"]["numerical_statistics"]
    present = [v for v in INCOMES if v is not None]
    assert income["common"] == {"num_present": 7, "num_missing": 1}
    assert income["mean"] == pytest.approx(pystats.mean(present))
    city = features["city"]["string_statistics"]
    assert city["distinct_count"] == 3
    assert {b["value"]: b["count"] for b in city["distribution"]["categorical"]["buckets"]} == {
        "paris": 3, "lyon": 3, "nice": 2,
    }  # fmt: skip

    cons = read(home, dq["CalculatedBaselineConstraints"])
    by_name = {f["name"]: f for f in cons["features"]}
    assert by_name["income"]["completeness"] == pytest.approx(7 / 8)
    assert by_name["age"]["num_constraints"] == {"is_non_negative": True}
    assert by_name["city"]["string_constraints"]["domains"] == ["lyon", "nice", "paris"]
    assert cons["monitoring_config"]["distribution_constraints"]["comparison_threshold"] == 0.1

    expected, (tp, fp, fn, tn) = binary_metrics()
    metrics = read(home, mq["CalculatedBaselineStatistics"])["binary_classification_metrics"]
    for name, value in expected.items():
        assert metrics[name]["value"] == pytest.approx(value), name
        assert metrics[name]["standard_deviation"] == "NaN"  # fewer than 200 rows
    assert metrics["confusion_matrix"] == {"0": {"0": tn, "1": fp}, "1": {"0": fn, "1": tp}}
    mq_cons = read(home, mq["CalculatedBaselineConstraints"])["binary_classification_constraints"]
    assert mq_cons["accuracy"] == {
        "threshold": pytest.approx(expected["accuracy"]),
        "comparison_operator": "LessThanThreshold",
    }

    (package,) = home.registry.list(group="g")
    assert (
        package["request"]["DriftCheckBaselines"]["ModelDataQuality"]["Constraints"]["S3Uri"]
        == (dq["CalculatedBaselineConstraints"])
    )
    quality = package["metrics"]["ModelQuality.Statistics"]["Content"]
    assert quality["binary_classification_metrics"]["accuracy"]["value"] == pytest.approx(
        expected["accuracy"]
    )


def test_drift_check_against_the_registered_baseline_then_a_drifted_dataset_fails(sdk_definition, home):
    first = run_definition(sdk_definition, home=home)
    assert first.status == "Succeeded", first.failure_reason
    checked = {"SkipDQ": False, "RegisterDQ": False, "SkipMQ": False, "RegisterMQ": False}

    again = run_definition(sdk_definition, home=home, params=checked)
    assert again.status == "Succeeded", again.failure_reason
    dq = again.steps["DQ"].properties
    # checked against, and carried over: version 1's DriftCheckBaselines, not this run's new baseline
    assert (
        dq["BaselineUsedForDriftCheckConstraints"]
        == first.steps["DQ"].properties["CalculatedBaselineConstraints"]
    )
    assert dq["CalculatedBaselineConstraints"].startswith(f"s3://b/checks/{again.id}/")
    assert read(home, dq["ViolationReport"]) == {"violations": []}
    assert read(home, again.steps["MQ"].properties["ViolationReport"]) == {"violations": []}
    v2 = home.registry.list(group="g")[-1]
    assert (
        v2["request"]["DriftCheckBaselines"]["ModelQuality"]["Statistics"]["S3Uri"]
        == (first.steps["MQ"].properties["CalculatedBaselineStatistics"])
    )

    # age turns String in two rows, income loses three more values, city gains an unknown value
    drifted = [
        ("unknown" if i in (1, 4) else a, None if i in (0, 1, 5) else inc, "rome" if i == 6 else c)
        for i, (a, inc, c) in enumerate(zip(AGES, INCOMES, CITIES, strict=True))
    ]
    put(home, "s3://b/data/drifted/part-0.csv", csv("age,income,city", drifted))
    failed = run_definition(sdk_definition, home=home, params={**checked, "TrainData": "s3://b/data/drifted"})
    assert failed.status == "Failed"
    step = failed.steps["DQ"]
    assert step.status == "Failed"
    assert step.failure_reason.startswith("ClientError: Quality check failed: data_type_check on feature age")
    assert "Register" not in failed.steps or failed.steps["Register"].status != "Succeeded"
    violations = read(home, f"s3://b/checks/{failed.id}/dq/constraint_violations.json")["violations"]
    found = {(v["feature_name"], v["constraint_check_type"]) for v in violations}
    assert {
        ("age", "data_type_check"),
        ("income", "completeness_check"),
        ("city", "categorical_values_check"),
    } <= found
    completeness = next(v for v in violations if v["constraint_check_type"] == "completeness_check")
    assert "87.5%" in completeness["description"] and "50%" in completeness["description"]
    assert len(home.registry.list(group="g")) == 2  # no version registered from the failed run


def test_model_quality_violation_of_supplied_constraints_fails_naming_the_metric(sdk_definition, home):
    strict = {
        "binary_classification_constraints": {
            "accuracy": {"threshold": 0.95, "comparison_operator": "LessThanThreshold"}
        }
    }
    put(home, "s3://b/baselines/mq-constraints.json", json.dumps(strict).encode())
    record = run_definition(
        sdk_definition, home=home,
        params={"SkipMQ": False, "RegisterMQ": False, "MQConstraints": "s3://b/baselines/mq-constraints.json"},
    )  # fmt: skip
    step = record.steps["MQ"]
    assert step.status == "Failed"
    assert step.failure_reason.startswith(
        "ClientError: Quality check failed: LessThanThreshold on metric accuracy"
    )
    (violation,) = read(home, step.properties["ViolationReport"])["violations"]
    assert violation["metric_name"] == "accuracy" and "'0.95'" in violation["description"]
    assert step.properties["BaselineUsedForDriftCheckConstraints"] == "s3://b/baselines/mq-constraints.json"

    lenient = _edit(sdk_definition, "MQ", lambda s: s.update(FailOnViolation=False))
    record = run_definition(
        lenient, home=home,
        params={"SkipMQ": False, "RegisterMQ": False, "MQConstraints": "s3://b/baselines/mq-constraints.json"},
    )  # fmt: skip
    assert record.status == "Succeeded", record.failure_reason
    assert (
        read(home, record.steps["MQ"].properties["ViolationReport"])["violations"][0]["metric_name"]
        == "accuracy"
    )
    warnings = [e for e in home.events.for_execution(record.id) if e["kind"] == "warning"]
    assert any("LessThanThreshold on metric accuracy" in e["message"] for e in warnings), warnings


def _edit(definition: dict, step: str, change) -> dict:
    doc = copy.deepcopy(definition)
    change(next(s for s in doc["Steps"] if s["Name"] == step))
    return doc


def _env(**values):
    return lambda s: s["Arguments"]["Environment"].update(values)


REFUSED_BEFORE_START = [
    (
        _env(dataset_format='{"xml": {}}'),
        "DQ",
        "step DQ: Environment.dataset_format: unknown format 'xml' (one of csv, json, parquet)",
    ),
    (
        lambda s: s.update(CheckType="BIAS"),
        "DQ",
        'step DQ: CheckType "BIAS" is not DATA_QUALITY or MODEL_QUALITY',
    ),
    (
        _env(problem_type="Ranking"),
        "MQ",
        "step MQ: Environment.problem_type: 'Ranking' is not one of Regression",
    ),
]


@pytest.mark.parametrize(
    "change, step, message", REFUSED_BEFORE_START, ids=["dataset-format", "check-type", "problem-type"]
)
def test_bad_requests_refused_before_start(sdk_definition, home, change, step, message):
    with pytest.raises(DefinitionError) as err:
        run_definition(_edit(sdk_definition, step, change), home=home)
    assert str(err.value).startswith(message)
    assert home.runs.list() == []


FAILING_AT_RUN = [
    ({"TrainData": "s3://b/nothing/"}, None, "DQ", "dataset missing: no object under s3://b/nothing/"),
    (
        {"SkipDQ": False},
        None,
        "DQ",
        "no baseline to check against: SuppliedBaselineConstraints is empty and model package group 'g' has no "
        "Approved version with DriftCheckBaselines.ModelDataQuality",
    ),
    (
        {},
        ("MQ", _env(ground_truth_attribute="truth")),
        "MQ",
        "Environment.ground_truth_attribute: no column 'truth'",
    ),
]


@pytest.mark.parametrize(
    "params, change, step, reason",
    FAILING_AT_RUN,
    ids=["dataset-missing", "no-baseline", "ground-truth-column"],
)
def test_bad_input_fails_the_step_with_one_line(sdk_definition, home, params, change, step, reason):
    definition = _edit(sdk_definition, *change) if change else sdk_definition
    record = run_definition(definition, home=home, params=params)
    assert record.status == "Failed"
    assert record.steps[step].failure_reason.startswith(reason), record.steps[step].failure_reason
    assert "\n" not in record.steps[step].failure_reason
    assert record.failure_reason.startswith(f"step {step} failed: ")


def test_regression_and_multiclass_metrics():
    truth = [float(i % 7) for i in range(250)]
    predicted = [t + (0.5 if i % 3 else -1.0) for i, t in enumerate(truth)]
    frame = pd.DataFrame({"_c0": predicted, "_c1": truth})
    env = {"problem_type": "Regression", "inference_attribute": "_c0", "ground_truth_attribute": "_c1"}
    metrics = model_quality.statistics(frame, env)["regression_metrics"]
    errors = [p - t for p, t in zip(predicted, truth, strict=True)]
    mse = sum(e * e for e in errors) / len(errors)
    assert metrics["mae"]["value"] == pytest.approx(sum(abs(e) for e in errors) / len(errors))
    assert metrics["mse"]["value"] == pytest.approx(mse)
    assert metrics["rmse"]["value"] == pytest.approx(mse**0.5)
    mean = sum(truth) / len(truth)
    assert metrics["r2"]["value"] == pytest.approx(1 - mse * len(truth) / sum((t - mean) ** 2 for t in truth))
    assert isinstance(metrics["mae"]["standard_deviation"], float)  # 250 rows: five 80% samples

    frame = pd.DataFrame({"pred": ["a", "b", "c", "a", "b", "a"], "label": ["a", "b", "c", "b", "b", "c"]})
    env = {
        "problem_type": "MulticlassClassification",
        "inference_attribute": "pred",
        "ground_truth_attribute": "label",
    }
    metrics = model_quality.statistics(frame, env)["multiclass_classification_metrics"]
    assert metrics["accuracy"]["value"] == pytest.approx(4 / 6)
    assert metrics["confusion_matrix"]["b"] == {"a": 1, "b": 2, "c": 0}


def test_the_corpus_examples_quality_check_steps_run_on_data_of_their_shape(home):
    """The clarify/quality example's two QualityCheck steps as its SDK v2 serialized them (headerless CSV,
    ``Get``s on Boolean parameters, empty supplied baselines), their inputs pointed at data of the shape
    its preprocessing and transform steps write: a first run (skip, register), then a checked one."""
    corpus = json.loads(
        (PROJECT_ROOT / "tests/corpus/examples-clarify-quality-checks/definition.json").read_text()
    )
    steps = [copy.deepcopy(s) for s in corpus["Steps"] if s["Type"] == "QualityCheck"]
    inputs = {
        "DataQualityCheckStep": "s3://b/abalone/train",
        "ModelQualityCheckStep": "s3://b/abalone/transform",
    }
    for step in steps:
        step["Arguments"]["ProcessingInputs"][0]["S3Input"]["S3Uri"] = inputs[step["Name"]]
    rows = [
        (9 + i % 5, 0.455 + i / 100, 0.365, 0.095 + i / 1000) for i in range(40)
    ]  # rings first, no header
    put(home, "s3://b/abalone/train/train.csv", csv("", rows).lstrip(b"\n"))
    put(
        home, "s3://b/abalone/transform/test.csv.out", csv("", [(r + 0.5, r) for r, *_ in rows]).lstrip(b"\n")
    )
    doc = {**corpus, "Steps": steps}
    first = {
        "SkipDataQualityCheck": True, "RegisterNewDataQualityBaseline": True,
        "SkipModelQualityCheck": True, "RegisterNewModelQualityBaseline": True,
    }  # fmt: skip
    record = run_definition(doc, home=home, params=first)
    assert record.status == "Succeeded", record.failure_reason
    dq = record.steps["DataQualityCheckStep"].properties
    assert (
        dq["CalculatedBaselineStatistics"]
        == f"s3://sagemaker-corpus/model-monitor-clarify/{record.id}/dataqualitycheckstep/statistics.json"
    )
    names = [f["name"] for f in read(home, dq["CalculatedBaselineStatistics"])["features"]]
    assert names == ["_c0", "_c1", "_c2", "_c3"]
    mq = read(home, record.steps["ModelQualityCheckStep"].properties["CalculatedBaselineStatistics"])
    assert mq["regression_metrics"]["mae"]["value"] == pytest.approx(0.5)

    supplied = {  # a later run checks against the first run's baselines, supplied as parameters
        "DataQualitySuppliedStatistics": dq["CalculatedBaselineStatistics"],
        "DataQualitySuppliedConstraints": dq["CalculatedBaselineConstraints"],
        "ModelQualitySuppliedConstraints": record.steps["ModelQualityCheckStep"].properties[
            "CalculatedBaselineConstraints"
        ],
    }
    again = run_definition(doc, home=home, params=supplied)
    assert again.status == "Succeeded", again.failure_reason
    assert (
        again.steps["DataQualityCheckStep"].properties["BaselineUsedForDriftCheckConstraints"]
        == (dq["CalculatedBaselineConstraints"])
    )
