"""Tuning steps: CreateHyperParameterTuningJob run here, each trial a real training job (optuna searching)."""

from __future__ import annotations

import copy
import io
import json
import os
import shutil
import tarfile
import textwrap
from pathlib import Path

import pytest

from mlops.errors import DefinitionError
from mlops.local.check import check
from mlops.local.handlers import tuning
from mlops.local.handlers.tuning import parse_plan, parse_range, trial_job_name, trial_request
from mlops.local.s3store import S3Store
from mlops.local.scheduler import run_definition
from tests.sdk_offline import store_session

ROLE = "arn:aws:iam::123456789012:role/x"
# A training script whose loss is a known function of its hyperparameters: minimum 0 at shift = 3.
QUADRATIC = textwrap.dedent(
    """
    import argparse, os, pathlib
    p = argparse.ArgumentParser()
    p.add_argument("--shift", type=float)  # a one-letter name becomes -x
    p.add_argument("--epochs", type=int)
    a, _ = p.parse_known_args()
    pathlib.Path(os.environ["SM_MODEL_DIR"], "x.txt").write_text(str(a.shift))
    print(f"loss: {(a.shift - 3) ** 2}")
    """
)


# ------------------------------------------------------------------------------------------ ranges


def continuous(lo, hi, scaling="Auto", name="x"):
    return {"Name": name, "MinValue": str(lo), "MaxValue": str(hi), "ScalingType": scaling}


@pytest.mark.parametrize(
    ("lo", "hi", "scaling", "log", "reverse"),
    [
        (0, 10, "Auto", False, False),  # MinValue 0: never logarithmic
        (1, 50, "Auto", False, False),  # under two orders of magnitude
        (0.001, 0.1, "Auto", True, False),  # two orders of magnitude: logarithmic
        (0.001, 0.1, "Linear", False, False),
        (0.01, 10, "Logarithmic", True, False),
        (0.9, 0.999, "ReverseLogarithmic", False, True),
    ],
)
def test_scaling_types_map_to_optuna_distributions(lo, hi, scaling, log, reverse):
    p = parse_range(continuous(lo, hi, scaling), "continuous", "r")
    assert (p.log, p.reverse) == (log, reverse)
    d = p.distribution()
    if reverse:  # 1 - x sampled on a log scale over (1 - max, 1 - min)
        assert d.log and d.low == pytest.approx(1 - hi) and d.high == pytest.approx(1 - lo)
        assert float(p.hyperparameter(0.001)) == pytest.approx(0.999)
        assert float(p.hyperparameter(0.1)) == pytest.approx(0.9)
    else:
        assert (d.low, d.high, d.log) == (lo, hi, log)


def test_integer_and_categorical_ranges_give_strings():
    i = parse_range(
        {"Name": "depth", "MinValue": "2", "MaxValue": "9", "ScalingType": "Linear"}, "integer", "r"
    )
    assert i.distribution().low == 2 and i.hyperparameter(5) == "5"
    c = parse_range({"Name": "opt", "Values": ["sgd", "adam", "sgd"]}, "categorical", "r")
    assert c.values == ("sgd", "adam") and c.hyperparameter("adam") == "adam"


@pytest.mark.parametrize(
    ("entry", "kind", "fragment"),
    [
        (
            {"Name": "n", "MinValue": "1", "MaxValue": "9", "ScalingType": "ReverseLogarithmic"},
            "integer",
            "continuous ranges only",
        ),
        (continuous(0, 1, "Logarithmic"), "continuous", "MinValue > 0"),
        (continuous(0.5, 1.0, "ReverseLogarithmic"), "continuous", "MaxValue < 1"),
        (continuous(5, 1), "continuous", "above MaxValue"),
        (continuous("a", 1), "continuous", "r.MinValue: 'a' is not a number"),
        (continuous(0, 1, "Cubic"), "continuous", "r.ScalingType: unknown ScalingType"),
        ({"Name": "c", "Values": []}, "categorical", "r.Values"),
    ],
)
def test_bad_ranges_name_the_field(entry, kind, fragment):
    with pytest.raises(DefinitionError, match=None) as err:
        parse_range(entry, kind, "r")
    assert fragment in str(err.value)


def config(strategy="Random", ranges=None, jobs=4, parallel=1, **extra):
    return {
        "HyperParameterTuningJobConfig": {
            "Strategy": strategy,
            "ResourceLimits": {"MaxNumberOfTrainingJobs": jobs, "MaxParallelTrainingJobs": parallel},
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
            "ParameterRanges": ranges
            if ranges is not None
            else {"ContinuousParameterRanges": [continuous(0, 10)]},
            **extra,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": {"epochs": "1"},
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
            "HyperParameterTuningResourceConfig": {
                "InstanceType": "ml.m5.large",
                "InstanceCount": 1,
                "VolumeSizeInGB": 1,
            },
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "RoleArn": ROLE,
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        },
    }


def test_strategies_map_to_optuna_samplers_and_pruners():
    import optuna

    kinds = {
        "Random": (optuna.samplers.RandomSampler, optuna.pruners.NopPruner),
        "Bayesian": (optuna.samplers.TPESampler, optuna.pruners.NopPruner),
        "Hyperband": (optuna.samplers.RandomSampler, optuna.pruners.HyperbandPruner),
    }
    for strategy, (sampler, pruner) in kinds.items():
        plan = parse_plan(config(strategy))
        assert isinstance(plan.sampler(), sampler) and isinstance(plan.pruner(), pruner)
    auto = parse_plan(config("Bayesian", TrainingJobEarlyStoppingType="Auto"))
    assert isinstance(auto.pruner(), optuna.pruners.MedianPruner)
    grid = parse_plan(
        config(
            "Grid",
            {
                "CategoricalParameterRanges": [
                    {"Name": "a", "Values": ["1", "2"]},
                    {"Name": "b", "Values": ["x", "y", "z"]},
                ]
            },
            jobs=None,
        )
    )
    assert isinstance(grid.sampler(), optuna.samplers.GridSampler) and grid.max_jobs == 6
    assert parse_plan(config(RandomSeed=7)).seed == 7 and parse_plan(config()).seed == tuning.DEFAULT_SEED
    assert parse_plan(config(parallel=64), cores=2).parallel == 2  # bounded by this machine's cores


def test_trial_requests_and_names():
    plan = parse_plan(config())
    req = trial_request(plan.definition, {"x": "2.5"})
    assert req["HyperParameters"] == {"epochs": "1", "x": "2.5"}
    assert req["ResourceConfig"] == {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1}
    assert "StaticHyperParameters" not in req and "HyperParameterTuningResourceConfig" not in req
    name = trial_job_name("Tune-1a2b3c4d", 7)
    assert name.startswith("Tune-1a2b3c4d-007-") and len(name.rsplit("-", 1)[1]) == 8
    assert len(tuning.tuning_job_name("e" * 12, "S" * 80)) <= 32


def definition_of(arguments) -> dict:
    step = {"Name": "Tune", "Type": "Tuning", "Arguments": arguments}
    return {"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": [step]}


def sdk_args():
    base = config()
    base["TrainingJobDefinition"]["StaticHyperParameters"].update(
        sagemaker_program="train.py", sagemaker_submit_directory="s3://b/code/sourcedir.tar.gz"
    )
    return base


@pytest.mark.parametrize(
    ("patch", "fragment"),
    [
        (lambda a: a["HyperParameterTuningJobConfig"].update(Strategy="Evolutionary"), "Strategy"),
        (
            lambda a: a["HyperParameterTuningJobConfig"].update(
                ParameterRanges={"ContinuousParameterRanges": []}
            ),
            "ParameterRanges: no ranges to search",
        ),
        (
            lambda a: a["HyperParameterTuningJobConfig"].update(Strategy="Grid"),
            "ParameterRanges.ContinuousParameterRanges: the Grid strategy searches categorical ranges only",
        ),
        (
            lambda a: a.update(
                WarmStartConfig={
                    "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "p"}],
                    "WarmStartType": "TransferLearning",
                }
            ),
            "WarmStartConfig",
        ),
        (
            lambda a: a["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"].update(
                Type="Best"
            ),
            "HyperParameterTuningJobObjective.Type",
        ),
    ],
)
def test_bad_requests_are_refused_before_start_with_the_field(tmp_path, patch, fragment):
    args = sdk_args()
    patch(args)
    result = check(definition_of(args))
    assert not result.runnable and any(fragment in b for b in result.blockers), result.blockers
    with pytest.raises(DefinitionError):
        run_definition(definition_of(args), home=tmp_path)
    assert not (tmp_path / "s3").exists() or not list((tmp_path / "s3").rglob("model.tar.gz"))


def test_check_no_longer_lists_tuning_as_unsupported():
    result = check(definition_of(sdk_args()))
    assert result.runnable, result.blockers
    assert "Random search (optuna)" in result.steps[0].runtime


# ---------------------------------------------------------------------------------- SDK-built, run


def sdk_definition(
    store: S3Store, tmp_path: Path, *, strategy="Bayesian", jobs=4, parallel=2, **tuner_kwargs
):
    """A TuningStep as the SageMaker SDK (v3 HyperparameterTuner over a ModelTrainer) serializes it."""
    os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    from sagemaker.core.parameter import ContinuousParameter
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import TuningStep
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, OutputDataConfig, SourceCode, StoppingCondition
    from sagemaker.train.tuner import HyperparameterTuner

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = QUADRATIC.encode()
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    store.put_bytes("s3://b/code/sourcedir.tar.gz", buf.getvalue())

    session = store_session(store)
    trainer = ModelTrainer(
        training_image="img",
        role=ROLE,
        sagemaker_session=session,
        base_job_name="quad",
        # an S3 source dir: the tuner then passes it as sagemaker_submit_directory without uploading
        source_code=SourceCode(source_dir="s3://b/code/sourcedir.tar.gz", entry_script="train.py"),
        compute=Compute(instance_type="ml.m5.large", instance_count=1),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=120),
        output_data_config=OutputDataConfig(s3_output_path="s3://b/quad"),
        hyperparameters={"epochs": 1},
    )
    tuner = HyperparameterTuner(
        model_trainer=trainer,
        objective_metric_name="loss",
        hyperparameter_ranges={"shift": ContinuousParameter(0, 10)},
        metric_definitions=[{"Name": "loss", "Regex": "loss: ([0-9.eE+-]+)"}],
        max_jobs=jobs,
        max_parallel_jobs=parallel,
        strategy=strategy,
        objective_type="Minimize",
        **tuner_kwargs,
    )
    step = TuningStep(name="Tune", step_args=tuner.tune(wait=False))
    top = step.get_top_model_s3_uri(top_k=0, s3_bucket="b", prefix="quad")
    use = {  # a Model step from the best training job's artifacts, as the SDK examples do
        "Name": "Best",
        "Type": "Model",
        "Arguments": {
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {"Image": "img", "ModelDataUrl": top.expr},
        },
    }
    doc = json.loads(Pipeline(name="p", steps=[step], sagemaker_session=session).definition())
    # The toolkit downloads an S3 sagemaker_submit_directory itself, from AWS (this definition gets no
    # local S3 stand-in): the code travels as a File channel instead, a directory the toolkit also accepts.
    definition = doc["Steps"][0]["Arguments"]["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"]["sagemaker_submit_directory"] == "s3://b/code/sourcedir.tar.gz"
    store.put_bytes("s3://b/code/src/train.py", QUADRATIC.encode())
    definition["StaticHyperParameters"]["sagemaker_submit_directory"] = "/opt/ml/input/data/code"
    definition["InputDataConfig"].append(
        {
            "ChannelName": "code",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/code/src"}},
            "InputMode": "File",
        }
    )
    doc["Steps"].append(use)
    return doc


def model_x(store: S3Store, uri: str) -> float:
    with tarfile.open(fileobj=io.BytesIO(store.path(uri).read_bytes())) as tar:
        return float(tar.extractfile("x.txt").read())


@pytest.mark.slow
def test_sdk_tuning_step_runs_to_succeeded_and_the_top_model_exists(tmp_path, mode):
    store = S3Store(tmp_path / "home" / "s3")
    doc = sdk_definition(store, tmp_path, strategy="Random", jobs=6, parallel=2)
    record = run_definition(doc, home=tmp_path / "home")
    assert record.status == "Succeeded", record.failure_reason
    props = record.steps["Tune"].properties
    assert props["HyperParameterTuningJobStatus"] == "Completed"
    assert (
        props["HyperParameterTuningJobArn"].startswith("arn:aws:sagemaker:")
        and ":123456789012:hyper-parameter-tuning-job/" in props["HyperParameterTuningJobArn"]
    )
    assert (
        props["TrainingJobStatusCounters"]["Completed"] == 6
        and props["ObjectiveStatusCounters"]["Succeeded"] == 6
    )
    summaries = props["TrainingJobSummaries"]
    values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries]
    assert values == sorted(values) and len(summaries) == 6  # best first
    best = props["BestTrainingJob"]
    assert best["TrainingJobName"] == summaries[0]["TrainingJobName"]
    assert best["TrainingJobName"].startswith(props["HyperParameterTuningJobName"] + "-")
    x = float(best["TunedHyperParameters"]["shift"])
    assert best["FinalHyperParameterTuningJobObjectiveMetric"] == {
        "Type": "Minimize",
        "MetricName": "loss",
        "Value": pytest.approx((x - 3) ** 2),
    }
    assert abs(x - 3) < 2  # six random draws over [0, 10]: the best is near the optimum
    # get_top_model_s3_uri's object exists and is that trial's model
    uri = Home_model_url(tmp_path / "home")
    assert uri == f"s3://b/quad/{best['TrainingJobName']}/output/model.tar.gz"
    assert model_x(store, uri) == pytest.approx(x)
    assert len(record.steps["Tune"].log_paths) == 6 and record.steps["Tune"].metrics["loss"] == pytest.approx(
        (x - 3) ** 2
    )
    trial_dir = Path(record.steps["Tune"].job_dir) / best["TrainingJobName"]
    assert json.loads((trial_dir / "trial.json").read_text())["TrainingJobStatus"] == "Completed"
    # each trial's metric history is a series of its own: host <trial job>/algo-1, its objective last
    from mlops.local.state.home import Home

    history = Home.open(tmp_path / "home").runs.metric_history(record.id, step="Tune", name="loss")
    last = {p["host"]: p["value"] for p in history}
    assert last == {
        f"{t['TrainingJobName']}/algo-1": pytest.approx(t["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
        for t in summaries
    }


def Home_model_url(home: Path) -> str:  # noqa: N802
    from mlops.local.state.home import Home

    (model,) = Home.open(home).registry.models()
    return model["request"]["PrimaryContainer"]["ModelDataUrl"]


@pytest.mark.slow
def test_bayesian_with_a_fixed_seed_beats_its_first_random_trials(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_SANDBOX", "none")
    store = S3Store(tmp_path / "home" / "s3")
    doc = sdk_definition(store, tmp_path, strategy="Bayesian", jobs=9, parallel=1)
    doc["Steps"] = doc["Steps"][:1]
    doc["Steps"][0]["Arguments"]["HyperParameterTuningJobConfig"]["RandomSeed"] = 11
    record = run_definition(doc, home=tmp_path / "home")
    assert record.status == "Succeeded", record.failure_reason
    summaries = record.steps["Tune"].properties["TrainingJobSummaries"]
    by_number = {
        int(s["TrainingJobName"].rsplit("-", 2)[1]): s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
        for s in summaries
    }
    startup = [by_number[n] for n in (1, 2, 3)]  # TPE's random startup trials (MaxNumberOfTrainingJobs // 3)
    guided = [by_number[n] for n in range(4, 10)]
    assert min(guided) < min(startup), by_number
    # the same seed, the same trials
    shutil.copytree(tmp_path / "home" / "s3", tmp_path / "home2" / "s3")  # the code and drivers
    again = run_definition(copy.deepcopy(doc), home=tmp_path / "home2")
    assert again.status == "Succeeded", again.failure_reason
    tuned = [s["TunedHyperParameters"] for s in summaries]
    assert [
        s["TunedHyperParameters"] for s in again.steps["Tune"].properties["TrainingJobSummaries"]
    ] == tuned


@pytest.mark.slow
def test_every_trial_failing_fails_the_step_naming_the_first(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_SANDBOX", "none")
    store = S3Store(tmp_path / "home" / "s3")
    doc = sdk_definition(store, tmp_path, strategy="Random", jobs=2, parallel=1)
    doc["Steps"] = doc["Steps"][:1]
    definition = doc["Steps"][0]["Arguments"]["TrainingJobDefinition"]
    definition["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "loss", "Regex": "never printed: ([0-9.]+)"}
    ]
    record = run_definition(doc, home=tmp_path / "home")
    assert record.status == "Failed"
    reason = record.steps["Tune"].failure_reason
    assert "every training job" in reason and "-001-" in reason and "'loss' was never logged" in reason, (
        reason
    )
    assert len(reason.splitlines()) == 1
