"""SageMaker's built-in XGBoost algorithm on the xgboost package: the real script on real data, as a job runs it.

Each test lays out a temp dir as ``/opt/ml`` is laid out, points the ``SM_*`` variables at it (as the local
runtime does without namespaces) and runs ``mlops/local/images/xgboost_algorithm.py train`` as a process.
"""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import re
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from mlops.local.images import xgboost_algorithm as algo

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = Path(algo.__file__)
DATA = Path(__file__).parent / "data"
CSV_CONFIG = {"ContentType": "text/csv", "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}

# The MetricDefinitions SageMaker attaches to a built-in XGBoost training job, as DescribeTrainingJob shows
# them (AlgorithmSpecification.MetricDefinitions of a sagemaker-xgboost:1.5-1 job in a public
# `aws sagemaker describe-training-job` transcript, 2025-05; the same regexes appear in a public
# DescribeHyperParameterTuningJob output of 2020 for the XGBoost algorithm):
SERVICE_REGEXES = {
    "train:rmse": r".*\[[0-9]+\].*#011train-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*",
    "validation:rmse": r".*\[[0-9]+\].*#011validation-rmse:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*",
    "validation:mae": r".*\[[0-9]+\].*#011validation-mae:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*",
    "train:auc": r".*\[[0-9]+\].*#011train-auc:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*",
    "validation:auc": r".*\[[0-9]+\].*#011validation-auc:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*",
    "validation:logloss": r".*\[[0-9]+\].*#011validation-logloss:([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?).*",
}
# The algorithm's own definition (github:aws/sagemaker-xgboost-container, branch 1.7-1,
# src/sagemaker_xgboost_container/algorithm_mode/metrics.py): regex=".*\\[[0-9]+\\].*#011validation-{}:(\\S+)"
CONTAINER_REGEX = r".*\[[0-9]+\].*#011validation-{}:(\S+)"


# ---------------------------------------------------------------- helpers


def csv_text(y, x) -> str:
    buf = io.StringIO()
    np.savetxt(buf, np.column_stack([y, x]), delimiter=",", fmt="%.6g")
    return buf.getvalue()


def regression(n=240, seed=0):
    """Rounded as the CSV holds them, so a model evaluated on these arrays sees what it was trained on."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 4)), 4)
    y = np.round(3 * x[:, 0] + x[:, 1] + rng.normal(scale=0.1, size=n) + 10, 4)
    return y, x


def binary(n=240, seed=1):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 3)), 4)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    return y, x


def libsvm_text(y, x, weights=None) -> str:
    rows = []
    for i, (label, row) in enumerate(zip(y, x, strict=True)):
        head = f"{label:g}" + (f":{weights[i]:g}" if weights is not None else "")
        rows.append(" ".join([head] + [f"{j}:{v:.6g}" for j, v in enumerate(row) if v != 0]))
    return "\n".join(rows) + "\n"


def make_job(tmp_path: Path, hps: dict, channels: dict, resourceconfig: dict | None = None) -> dict:
    """An /opt/ml tree under tmp_path; ``channels``: name -> (inputdataconfig entry, {relative path: text|bytes})."""
    ml = tmp_path / "ml"
    cfg, data = ml / "input" / "config", ml / "input" / "data"
    cfg.mkdir(parents=True)
    (cfg / "hyperparameters.json").write_text(json.dumps(hps))
    (cfg / "inputdataconfig.json").write_text(json.dumps({name: c for name, (c, _) in channels.items()}))
    (cfg / "resourceconfig.json").write_text(
        json.dumps(resourceconfig or {"current_host": "algo-1", "hosts": ["algo-1"]})
    )
    for name, (_, files) in channels.items():
        (data / name).mkdir(parents=True)
        for rel, content in files.items():
            path = data / name / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return {
        "SM_INPUT_CONFIG_DIR": str(cfg),
        "SM_INPUT_DATA_DIR": str(data),
        "SM_MODEL_DIR": str(ml / "model"),
        "SM_OUTPUT_DIR": str(ml / "output"),
    }


def run(
    env: dict, *args: str, by_path: bool = False, cwd: Path | None = None, python: str = sys.executable
) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PYTEST_", "PYTHONPATH"))}
    cmd = [python, str(SCRIPT)] if by_path else [python, "-m", "mlops.local.images.xgboost_algorithm"]
    return subprocess.run(
        [*cmd, "train", *args],
        env={**base, **env},
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def metric_lines(out: str) -> list[str]:
    return [ln for ln in out.splitlines() if re.match(r"^\[\d+\]", ln)]


def regression_job(tmp_path, hps=None, image=None):
    y, x = regression()
    env = make_job(
        tmp_path,
        hps or {"num_round": "20", "max_depth": "3", "eta": "0.3", "eval_metric": "rmse,mae"},
        {
            "train": (CSV_CONFIG, {"train.csv": csv_text(y[:160], x[:160])}),
            "validation": (CSV_CONFIG, {"validation.csv": csv_text(y[160:], x[160:])}),
        },
    )
    proc = run(env, *(["--image", image] if image else []))
    return env, proc, (y[160:], x[160:])


def model_path(env) -> Path:
    return Path(env["SM_MODEL_DIR"]) / "xgboost-model"


def failure(env) -> str:
    return (Path(env["SM_OUTPUT_DIR"]) / "failure").read_text()


def load_booster(env) -> xgb.Booster:
    """As the developer guide loads a 1.3-1+ model; xgboost 3.x warns that it guesses UBJSON for a name
    without an extension (which is what save_model wrote)."""
    bst = xgb.Booster()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        bst.load_model(str(model_path(env)))
    return bst


# ---------------------------------------------------------------- training


def test_regression_on_csv_with_validation_logs_each_round_and_writes_the_model(tmp_path):
    env, proc, (y_val, x_val) = regression_job(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = metric_lines(proc.stdout)
    assert len(lines) == 20
    assert lines[0].startswith("[0]#011train-rmse:") and "#011validation-mae:" in lines[0]
    assert "Train matrix has 160 rows and 4 columns" in proc.stdout
    assert "Validation matrix has 80 rows" in proc.stdout
    first, last = (
        float(re.match(SERVICE_REGEXES["validation:rmse"], ln).group(1)) for ln in (lines[0], lines[-1])
    )
    assert last < first / 5
    # The printed value is the model's: the saved booster re-evaluated on the validation data.
    bst = load_booster(env)
    assert bst.num_boosted_rounds() == 20
    evaluated = float(bst.eval(xgb.DMatrix(x_val, label=y_val)).split("eval-rmse:")[1].split()[0])
    assert evaluated == pytest.approx(last, abs=1e-4)
    assert (Path(env["SM_OUTPUT_DIR"]) / "success").exists()
    assert not (Path(env["SM_OUTPUT_DIR"]) / "failure").exists()


def test_metric_lines_match_the_regexes_sagemaker_defines_for_the_algorithm(tmp_path):
    env, proc, _ = regression_job(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = metric_lines(proc.stdout)
    for line in lines:
        values = {}
        for name, rx in SERVICE_REGEXES.items():
            m = re.match(rx, line)
            if m:
                values[name] = float(m.group(1))
        assert set(values) == {"train:rmse", "validation:rmse", "validation:mae"}, line
        # Each number is its own field even with several metrics on the line.
        assert f"#011validation-rmse:{values['validation:rmse']:.5f}#011" in line + "#011"
    # The container's own \S+ form reads the metric that ends the line.
    assert float(re.match(CONTAINER_REGEX.format("mae"), lines[-1]).group(1)) > 0
    # The definitions this module exports for the runtime are SageMaker's.
    exported = {d["Name"]: d["Regex"] for d in algo.METRIC_DEFINITIONS}
    for name, rx in SERVICE_REGEXES.items():
        assert exported[name] == rx


def test_libsvm_is_the_default_content_type_with_weights_and_nested_files_run_as_a_plain_script(tmp_path):
    y, x = binary()
    weights = np.where(y == 1, 2.0, 1.0)
    half = len(y) // 2
    channels = {
        "train": (
            {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"},  # no ContentType: libsvm
            {
                "part-0.libsvm": libsvm_text(y[:80], x[:80], weights[:80]),
                "more/part-1.libsvm": libsvm_text(y[80:half], x[80:half], weights[80:half]),
            },
        ),
        "validation": (
            {
                "ContentType": "text/libsvm",
                "TrainingInputMode": "File",
                "S3DistributionType": "FullyReplicated",
            },
            {"validation.libsvm": libsvm_text(y[half:], x[half:])},
        ),
    }
    hps = {"num_round": "10", "objective": "binary:logistic", "eval_metric": "auc", "max_depth": "2"}
    env = make_job(tmp_path, hps, channels)
    # By path, from elsewhere, without the project on sys.path: the file stands alone.
    proc = run(env, by_path=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Train matrix has {half} rows and 3 columns" in proc.stdout
    lines = metric_lines(proc.stdout)
    assert len(lines) == 10
    auc = float(re.match(SERVICE_REGEXES["validation:auc"], lines[-1]).group(1))
    assert auc > 0.95
    assert re.match(SERVICE_REGEXES["train:auc"], lines[-1])


def test_the_module_imports_nothing_from_the_project():
    tree = ast.parse(SCRIPT.read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {n for n in names if n.split(".")[0] in ("mlops", "pipelines", "steps")}


def test_parquet_input_from_several_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    y, x = regression(n=200)

    def parquet(rows) -> bytes:
        table = pa.table({"label": y[rows], **{f"f{j}": x[rows, j] for j in range(x.shape[1])}})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    config = {
        "ContentType": "application/x-parquet",
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
    }
    env = make_job(
        tmp_path,
        {"num_round": "15", "max_depth": "3"},
        {
            "train": (config, {"a.parquet": parquet(slice(0, 80)), "b.parquet": parquet(slice(80, 160))}),
            "validation": (config, {"v.parquet": parquet(slice(160, 200))}),
        },
    )
    proc = run(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Train matrix has 160 rows and 4 columns" in proc.stdout
    lines = metric_lines(proc.stdout)
    assert len(lines) == 15 and re.match(SERVICE_REGEXES["validation:rmse"], lines[-1])


def test_binary_logistic_with_auc_stops_early_on_the_last_eval_metric_and_keeps_the_best(tmp_path):
    y, x = binary(n=300)
    env = make_job(
        tmp_path,
        {
            "num_round": "200", "objective": "binary:logistic", "eval_metric": "logloss,auc",
            "early_stopping_rounds": "3", "max_depth": "3",
        },
        {
            "train": (CSV_CONFIG, {"train.csv": csv_text(y[:200], x[:200])}),
            "validation": (CSV_CONFIG, {"validation.csv": csv_text(y[200:], x[200:])}),
        },
    )  # fmt: skip
    proc = run(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = metric_lines(proc.stdout)
    assert 3 < len(lines) < 200  # stopped: auc (the last metric, maximized) stopped improving
    aucs = [float(re.match(SERVICE_REGEXES["validation:auc"], ln).group(1)) for ln in lines]
    best = max(range(len(aucs)), key=lambda i: (aucs[i], -i))
    assert len(lines) == best + 1 + 3
    assert load_booster(env).num_boosted_rounds() == best + 1  # the best iteration is what is saved
    assert all(re.match(SERVICE_REGEXES["validation:logloss"], ln) for ln in lines)


def test_early_stopping_needs_an_eval_metric_as_in_the_algorithm(tmp_path):
    env, proc, _ = regression_job(tmp_path, {"num_round": "8", "early_stopping_rounds": "1", "eta": "1"})
    assert proc.returncode == 0, proc.stderr
    assert len(metric_lines(proc.stdout)) == 8
    assert "early_stopping_rounds is set without eval_metric" in proc.stdout


def test_container_metrics_beside_xgboost_metrics(tmp_path):
    y, x = binary(n=200)
    env = make_job(
        tmp_path,
        {"num_round": "5", "objective": "binary:logistic", "eval_metric": "accuracy,f1,auc"},
        {
            "train": (CSV_CONFIG, {"train.csv": csv_text(y[:150], x[:150])}),
            "validation": (CSV_CONFIG, {"validation.csv": csv_text(y[150:], x[150:])}),
        },
    )
    proc = run(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = metric_lines(proc.stdout)[-1]
    assert re.search(
        r"#011validation-auc:[0-9.]+#011validation-accuracy:[0-9.]+#011validation-f1:[0-9.]+$", last
    )
    bst = load_booster(env)
    pred = (bst.predict(xgb.DMatrix(x[150:])) > 0.5).astype(int)
    accuracy = float(re.search(r"validation-accuracy:([0-9.]+)", last).group(1))
    assert accuracy == pytest.approx(float(np.mean(pred == y[150:])), abs=1e-5)


@pytest.mark.parametrize("with_num_class", [False, True])
def test_multi_softmax_needs_num_class(tmp_path, with_num_class):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 3))
    y = np.digitize(x[:, 0], [-0.5, 0.5])
    hps = {"num_round": "4", "objective": "multi:softmax", **({"num_class": "3"} if with_num_class else {})}
    env = make_job(tmp_path, hps, {"train": (CSV_CONFIG, {"train.csv": csv_text(y, x)})})
    proc = run(env)
    if with_num_class:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert len(metric_lines(proc.stdout)) == 4 and "#011train-mlogloss:" in metric_lines(proc.stdout)[0]
    else:
        assert proc.returncode == 1
        assert failure(env) == "Require input for parameter 'num_class' for multi-classification"


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize(
    "hps, message",
    [
        ({"num_round": "10", "eta": "1.5"}, "Hyperparameter eta: 1.5 is not in [0, 1]"),
        ({"num_round": "0"}, "Hyperparameter num_round: 0 is not in [1, +inf)"),
        (
            {"num_round": "ten"},
            "Hyperparameter num_round: could not parse value 'ten' as an integer (caused by ValueError)",
        ),
        ({"num_round": "5", "subsample": "0"}, "Hyperparameter subsample: 0.0 is not in (0, 1]"),
        (
            {"num_round": "5", "booster": "gbforest"},
            "Hyperparameter booster: gbforest is not in ['gbtree', 'gblinear', 'dart']",
        ),
        ({"num_round": "5", "max_dept": "3"}, "Extraneous hyperparameter found: max_dept"),
        (
            {"num_round": "5", "eval_metric": "rmse,auc"},
            "Metric 'auc' can only be applied for classification and ranking problems.",
        ),
        (
            {"num_round": "5", "monotone_constraints": "(1,0,0,0)"},
            "monotone_constraints can be used only when the tree_method parameter is set to either 'exact' or 'hist'.",
        ),
        ({"num_round": "5", "learning_rate": "-1"}, "Hyperparameter eta: -1.0 is not in [0, 1]"),
    ],
    ids=[
        "eta",
        "num_round-0",
        "num_round-ten",
        "subsample",
        "booster",
        "unknown",
        "auc",
        "monotone",
        "alias",
    ],
)
def test_a_bad_hyperparameter_fails_with_one_line_naming_it(tmp_path, hps, message):
    """The algorithm's checks and texts (hyperparameter_validation.py), written to output/failure."""
    env, proc, _ = regression_job(tmp_path, hps)
    assert proc.returncode == 1
    assert failure(env) == message
    assert "\n" not in failure(env)
    assert f"ERROR] {message}" in proc.stdout
    assert not model_path(env).exists()


def test_a_data_error_xgboost_reports_is_one_line_too(tmp_path):
    y, x = regression(n=60)  # labels around 10: not in [0, 1]
    env = make_job(
        tmp_path,
        {"num_round": "3", "objective": "binary:logistic"},
        {"train": (CSV_CONFIG, {"train.csv": csv_text(y, x)})},
    )
    proc = run(env)
    assert proc.returncode == 1
    assert failure(env) == "label must be in (0, 1) for logistic regression"
    assert "\n" not in failure(env)


def test_missing_num_round(tmp_path):
    env, proc, _ = regression_job(tmp_path, {"objective": "reg:squarederror", "eta": "0.1"})
    assert proc.returncode == 1
    assert failure(env) == "Missing required hyperparameter: num_round"


@pytest.mark.parametrize(
    "case, message",
    [
        ("label_size", "Channel configuration for 'train' channel is not supported: "),
        ("pipe", "Pipe mode is not supported by the local XGBoost algorithm (channel 'train'); use File"),
        ("extra_channel", "Extraneous channel found: test"),
        ("no_train", "Missing required channel: train"),
        ("recordio", "application/x-recordio-protobuf input is not supported by the local XGBoost algorithm"),
        ("hidden", "Hidden file found in the data path! Remove that before training."),
        ("empty", "No data in training channel path "),
        ("csv_as_libsvm", "Line 1 '10.5,1,2...' of file 'train.csv' is not 'LIBSVM' format."),
        ("not_a_host", "current host algo-3 is not one of the job's hosts ['algo-1', 'algo-2']"),
    ],
    ids=lambda v: v if " " not in str(v) else "",
)
def test_channel_and_host_problems_fail_with_one_line(tmp_path, case, message):
    data = {"train.csv": "10.5,1,2\n3,4,5\n"}
    channels = {"train": (dict(CSV_CONFIG), data)}
    rc = None
    if case == "label_size":
        channels["train"][0]["ContentType"] = "text/csv; label_size=1"  # accepted for inference, not training
    elif case == "pipe":
        channels["train"][0]["TrainingInputMode"] = "Pipe"
    elif case == "extra_channel":
        channels["test"] = (dict(CSV_CONFIG), data)
    elif case == "no_train":
        channels = {"validation": (dict(CSV_CONFIG), data)}
    elif case == "recordio":
        channels["train"][0]["ContentType"] = "application/x-recordio-protobuf"
    elif case == "hidden":
        channels["train"] = (CSV_CONFIG, {**data, ".DS_Store": "x"})
    elif case == "empty":
        channels["train"] = (CSV_CONFIG, {})
    elif case == "csv_as_libsvm":
        channels["train"] = ({"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}, data)
    elif case == "not_a_host":
        rc = {"current_host": "algo-3", "hosts": ["algo-1", "algo-2"]}
    env = make_job(tmp_path, {"num_round": "3"}, channels, rc)
    proc = run(env)
    assert proc.returncode == 1, proc.stdout
    assert failure(env).startswith(message), failure(env)
    assert "\n" not in failure(env)


# ---------------------------------------------------------------- the model file


@pytest.mark.parametrize(
    "image, pickled",
    [
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1", False),
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.0-1-cpu-py3", True),
        ("3.0-5", False),
    ],
    ids=["1.7-1", "1.0-1", "3.0-5"],
)
def test_the_model_file_loads_the_way_that_image_version_writes_it(tmp_path, image, pickled):
    env, proc, (y_val, x_val) = regression_job(tmp_path, {"num_round": "5"}, image=image)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = model_path(env)
    if pickled:  # before 1.3-1 the algorithm pickles the Booster
        with open(path, "rb") as f:
            bst = pickle.load(f)
        assert isinstance(bst, xgb.Booster)
        with pytest.raises((xgb.core.XGBoostError, UnicodeDecodeError)):
            xgb.Booster().load_model(str(path))
    else:  # from 1.3-1 on, Booster.save_model (the developer guide's xgb.Booster(); load_model(...))
        bst = load_booster(env)
        with open(path, "rb") as f, pytest.raises(pickle.UnpicklingError):
            pickle.load(f)
    assert bst.predict(xgb.DMatrix(x_val)).shape == (len(y_val),)
    base_score = float(
        json.loads(bst.save_config())["learner"]["learner_model_param"]["base_score"].strip("[]")
    )
    # Images before 3.0-5 ran XGBoost < 2.0, whose base_score was 0.5; 2.0+ estimates it from the labels.
    assert (base_score == 0.5) is (image != "3.0-5")


def test_the_abalone_examples_evaluation_script_runs_on_the_model(tmp_path):
    """The example trains with image 1.0-1 (hyperparameters as in its notebook) and evaluates with pickle."""
    rng = np.random.default_rng(3)
    n = 400
    x = np.column_stack([rng.normal(size=(n, 7)), np.eye(3)[rng.integers(0, 3, n)]])  # 7 scaled + one-hot sex
    y = np.round(10 + 2.5 * x[:, 0] + 1.5 * x[:, 6] + rng.normal(scale=1.0, size=n))
    hps = {
        "objective": "reg:linear", "num_round": "50", "max_depth": "5", "eta": "0.2", "gamma": "4",
        "min_child_weight": "6", "subsample": "0.7",
    }  # fmt: skip
    env = make_job(
        tmp_path / "train",
        hps,
        {
            "train": (CSV_CONFIG, {"train.csv": csv_text(y[:280], x[:280])}),
            "validation": (CSV_CONFIG, {"validation.csv": csv_text(y[280:340], x[280:340])}),
        },
    )
    proc = run(env, "--image", "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.0-1-cpu-py3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(metric_lines(proc.stdout)) == 50
    # model.tar.gz as the runtime packs /opt/ml/model; the test split as the example's preprocessing writes it.
    processing = tmp_path / "processing"
    (processing / "model").mkdir(parents=True)
    with tarfile.open(processing / "model" / "model.tar.gz", "w:gz") as tar:
        tar.add(model_path(env), arcname="xgboost-model")
    (processing / "test").mkdir()
    (processing / "test" / "test.csv").write_text(csv_text(y[340:], x[340:]))
    script = tmp_path / "evaluation.py"
    script.write_text(
        (DATA / "abalone_evaluation.py").read_text().replace("/opt/ml/processing", str(processing))
    )
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((processing / "evaluation" / "evaluation.json").read_text())
    mse = report["regression_metrics"]["mse"]["value"]
    assert 0 < mse < float(np.var(y[340:])) / 2
    assert report["regression_metrics"]["mse"]["standard_deviation"] > 0


def test_readers_missing_csv_values_and_libsvm_weights_and_qid(tmp_path):
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "a.csv").write_text("1,2,,4\n0,,3,5\n")
    data = algo.read_channel(str(csv_dir), algo.CSV, csv_weights=0)
    assert data.label.tolist() == [1, 0]
    assert np.isnan(data.x[0, 1]) and np.isnan(data.x[1, 0]) and data.x[1, 2] == 5
    weighted = algo.read_channel(str(csv_dir), algo.CSV, csv_weights=1)
    assert weighted.weight[0] == 2 and np.isnan(weighted.weight[1]) and weighted.x.shape == (2, 2)
    svm = tmp_path / "svm"
    svm.mkdir()
    (svm / "a.libsvm").write_text("1:2 qid:1 0:1.5 3:2\n0 qid:1 1:1 # a comment\n\n2:0.5 qid:2 2:4\n")
    data = algo.read_channel(str(svm), algo.LIBSVM, csv_weights=0)
    assert data.label.tolist() == [1, 0, 2] and data.weight.tolist() == [2, 1, 0.5]
    assert data.qid.tolist() == [1, 1, 2] and data.num_col == 4
    dense = algo.to_dmatrix(data, 5).get_data().toarray()
    assert dense.shape == (3, 5) and dense[0, 3] == 2 and dense[2, 2] == 4


# ---------------------------------------------------------------- helpers the runtime uses


@pytest.mark.parametrize(
    "image, version",
    [
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1", "1.7-1"),
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.0-1-cpu-py3", "1.0-1"),
        ("683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:0.90-2-cpu-py3", "0.90-2"),
        ("257758044811.dkr.ecr.us-east-2.amazonaws.com/sagemaker-xgboost:3.0-5", "3.0-5"),
        ("433757028032.dkr.ecr.us-west-2.amazonaws.com/xgboost:1", "0.72"),
        ("1.2-2", "1.2-2"),
        (None, algo.DEFAULT_VERSION),
    ],
)
def test_framework_version_from_the_image(image, version):
    assert algo.framework_version(image) == version


def test_builtin_image_recognition():
    assert algo.is_builtin_xgboost_image(
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    )
    assert algo.is_builtin_xgboost_image("433757028032.dkr.ecr.us-west-2.amazonaws.com/xgboost:latest")
    assert not algo.is_builtin_xgboost_image(
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1"
    )
    assert not algo.is_builtin_xgboost_image("img")


# ---------------------------------------------------------------- through the local runtime


# The runtime's wiring is under test here, not the image's environment: the project's xgboost (>= 2.0, which
# the multi-host path needs) stands in for the image's. The image's own environment (xgboost 1.0 on Python
# 3.7 for the abalone examples) runs in the corpus (tests/corpus).
PROJECT_XGBOOST = {"sagemaker-xgboost:*": "project"}


def test_through_the_local_training_runtime(store, tmp_path, mode):
    """The runtime runs the file as a job (here named by ContainerEntrypoint and shipped in the code channel)
    and parses its lines with the algorithm's MetricDefinitions."""
    from mlops.local.runtime import run_training_job

    y, x = regression()
    store.put_bytes("s3://b/code/xgboost_algorithm.py", SCRIPT.read_bytes())
    store.put_bytes("s3://b/data/train/train.csv", csv_text(y[:160], x[:160]).encode())
    store.put_bytes("s3://b/data/validation/validation.csv", csv_text(y[160:], x[160:]).encode())

    def channel(name, content_type):
        return {
            "ChannelName": name,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": f"s3://b/{name if name == 'code' else 'data/' + name}",
                }
            },
            "ContentType": content_type,
        }

    def request(hps):
        return {
            "AlgorithmSpecification": {
                "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
                "TrainingInputMode": "File",
                "ContainerEntrypoint": ["python3", "/opt/ml/input/data/code/xgboost_algorithm.py", "train"],
                "MetricDefinitions": algo.METRIC_DEFINITIONS,
            },
            "HyperParameters": hps,
            "InputDataConfig": [
                channel("code", "text/python"),
                channel("train", "text/csv"),
                channel("validation", "text/csv"),
            ],
            "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
            "StoppingCondition": {"MaxRuntimeInSeconds": 120},
            "RoleArn": "arn:aws:iam::123456789012:role/x",
        }

    lines = []
    res = run_training_job(
        request({"num_round": "10", "max_depth": "3"}), job_name="x-1", store=store, job_dir=tmp_path / "j1",
        on_log=lambda host, line: lines.append(line), images=PROJECT_XGBOOST,
    )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    last = metric_lines("\n".join(lines))[-1]
    assert res.metrics["validation:rmse"] == float(
        re.match(SERVICE_REGEXES["validation:rmse"], last).group(1)
    )
    assert res.metrics["train:rmse"] == float(re.match(SERVICE_REGEXES["train:rmse"], last).group(1))
    with tarfile.open(store.path("s3://b/models/x-1/output/model.tar.gz")) as tar:
        assert tar.getnames() == ["xgboost-model"]
        bst = xgb.Booster()
        bst.load_model(bytearray(tar.extractfile("xgboost-model").read()))
    assert bst.num_boosted_rounds() == 10

    res = run_training_job(
        request({"num_round": "10", "eta": "2"}),
        job_name="x-2",
        store=store,
        job_dir=tmp_path / "j2",
        images=PROJECT_XGBOOST,
    )
    assert res.status == "Failed"
    assert res.failure_reason == "Hyperparameter eta: 2.0 is not in [0, 1]"


@pytest.mark.slow
def test_across_hosts_as_one_group(store, tmp_path, bwrap_mode):
    """Two hosts, two training files sharded by key: algo-1 and algo-2 train as one XGBoost collective group
    on their shards; algo-1 logs the metrics and writes the model."""
    from mlops.local.runtime import run_training_job

    y, x = regression(n=300)
    store.put_bytes("s3://b/code/xgboost_algorithm.py", SCRIPT.read_bytes())
    store.put_bytes("s3://b/data/train/a.csv", csv_text(y[:120], x[:120]).encode())
    store.put_bytes("s3://b/data/train/b.csv", csv_text(y[120:240], x[120:240]).encode())
    store.put_bytes("s3://b/data/validation/v.csv", csv_text(y[240:], x[240:]).encode())

    def channel(name, content_type, distribution="FullyReplicated"):
        uri = "s3://b/code" if name == "code" else f"s3://b/data/{name}"
        source = {"S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": distribution}
        return {"ChannelName": name, "DataSource": {"S3DataSource": source}, "ContentType": content_type}

    request = {
        "AlgorithmSpecification": {
            "TrainingImage": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3", "/opt/ml/input/data/code/xgboost_algorithm.py", "train"],
            "MetricDefinitions": algo.METRIC_DEFINITIONS,
        },
        "HyperParameters": {"num_round": "8", "max_depth": "3", "eval_metric": "rmse,r2"},
        "InputDataConfig": [
            channel("code", "text/python"),
            channel("train", "text/csv", "ShardedByS3Key"),
            channel("validation", "text/csv"),
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }
    lines = {}
    res = run_training_job(
        request, job_name="d-1", store=store, job_dir=tmp_path / "j",
        on_log=lambda host, line: lines.setdefault(host, []).append(line), images=PROJECT_XGBOOST,
    )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    assert len(metric_lines("\n".join(lines["algo-1"]))) == 8
    assert not metric_lines("\n".join(lines["algo-2"]))
    assert any("Train matrix has 120 rows" in ln for ln in lines["algo-2"])
    last = metric_lines("\n".join(lines["algo-1"]))[-1]
    assert res.metrics["validation:rmse"] == float(
        re.match(SERVICE_REGEXES["validation:rmse"], last).group(1)
    )
    assert "#011validation-r2:" in last  # the algorithm's own metric, over both hosts' rows
    with tarfile.open(store.path("s3://b/models/d-1/output/model.tar.gz")) as tar:
        bst = xgb.Booster()
        bst.load_model(bytearray(tar.extractfile("xgboost-model").read()))
    assert bst.num_boosted_rounds() == 8
    # One model from both shards: its rmse on all 240 training rows is what algo-1 logged for train.
    evaluated = float(bst.eval(xgb.DMatrix(x[:240], label=y[:240])).split("eval-rmse:")[1].split()[0])
    assert evaluated == pytest.approx(float(re.match(SERVICE_REGEXES["train:rmse"], last).group(1)), abs=1e-4)


def test_a_host_without_data_leaves_the_group(tmp_path):
    """As the algorithm does (distributed.py rabit_run): the hosts agree on who has data, the one without
    exits 0, the others train. Hosts run here as plain processes on this machine (the tracker on the
    first, 'localhost'; a free port), since the local runtime refuses an empty shard before starting."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    y, x = regression(n=200)
    hosts = ["localhost", "h2", "h3"]
    procs = {}
    for i, host in enumerate(hosts):
        files = {"train.csv": csv_text(y[i * 80 : (i + 1) * 80], x[i * 80 : (i + 1) * 80])} if i < 2 else {}
        env = make_job(
            tmp_path / host,
            {"num_round": "4", "max_depth": "2"},
            {"train": (CSV_CONFIG, files)},
            {"current_host": host, "hosts": hosts},
        )
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "PYTEST_"))}
        procs[host] = (
            env,
            subprocess.Popen(
                [sys.executable, str(SCRIPT), "train"],
                env={**base, **env, "MLOPS_XGBOOST_TRACKER_PORT": str(port)},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
            ),
        )  # fmt: skip
    outs = {}
    for host, (_, proc) in procs.items():
        outs[host], _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, outs[host]
    assert len(metric_lines(outs["localhost"])) == 4 and not metric_lines(outs["h2"])
    assert "Host h3 not being used for distributed training." in outs["h3"]
    assert model_path(procs["localhost"][0]).exists()
    assert not model_path(procs["h2"][0]).exists() and not model_path(procs["h3"][0]).exists()


# Interpreters with an image's own libraries (xgboost 1.0, 1.7, ... as mlops.local.images.environments builds
# them), separated by os.pathsep; the script runs on each of them as a plain file.
OTHER_PYTHONS = [p for p in os.environ.get("MLOPS_XGBOOST_TEST_PYTHONS", "").split(os.pathsep) if p]


@pytest.mark.skipif(not OTHER_PYTHONS, reason="MLOPS_XGBOOST_TEST_PYTHONS names no interpreters")
@pytest.mark.parametrize("python", OTHER_PYTHONS or ["none"])
def test_on_an_images_own_xgboost(tmp_path, python):
    """Without --image the image is the installed xgboost's: its callbacks, metric API and model format."""
    y, x = binary(n=300)
    env = make_job(
        tmp_path / "bin",
        {
            "num_round": "60", "objective": "binary:logistic", "eval_metric": "logloss,accuracy,auc",
            "early_stopping_rounds": "3", "max_depth": "2",
        },
        {
            "train": (CSV_CONFIG, {"train.csv": csv_text(y[:200], x[:200])}),
            "validation": (CSV_CONFIG, {"validation.csv": csv_text(y[200:], x[200:])}),
        },
    )  # fmt: skip
    proc = run(env, by_path=True, cwd=tmp_path, python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = re.search(r"Image version (\S+) \(no --image given\); xgboost (\S+)", proc.stdout)
    lines = metric_lines(proc.stdout)
    assert 3 < len(lines) < 60, proc.stdout
    last = lines[-1]
    auc = float(re.match(SERVICE_REGEXES["validation:auc"], last).group(1))
    accuracy = float(re.search(r"#011validation-accuracy:([0-9.]+)", last).group(1))
    assert auc > 0.9 and accuracy > 0.8, last
    # The model loads, in that environment, the way that version writes it.
    pickled = algo._vt(version.group(1)) < (1, 3)
    check = (
        "import pickle, sys, numpy, xgboost; p = sys.argv[1]\n"
        + ("b = pickle.load(open(p, 'rb'))\n" if pickled else "b = xgboost.Booster(); b.load_model(p)\n")
        + "print(b.predict(xgboost.DMatrix(numpy.zeros((2, 3)))).shape)"
    )
    done = subprocess.run([python, "-c", check, str(model_path(env))], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "(2,)", done.stderr

    y, x = regression(n=200)
    env = make_job(
        tmp_path / "reg",
        {"num_round": "10", "eval_metric": "rmse,mse,r2", "max_depth": "3"},
        {
            "train": ({"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"},
                      {"train.libsvm": libsvm_text(y[:150], x[:150], np.ones(150))}),
            "validation": ({"ContentType": "text/libsvm", "TrainingInputMode": "File",
                            "S3DistributionType": "FullyReplicated"},
                           {"validation.libsvm": libsvm_text(y[150:], x[150:])}),
        },
    )  # fmt: skip
    proc = run(env, by_path=True, cwd=tmp_path, python=python)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = metric_lines(proc.stdout)[-1]
    rmse = float(re.match(SERVICE_REGEXES["validation:rmse"], last).group(1))
    mse = float(re.search(r"#011validation-mse:([0-9.e+-]+)", last).group(1))
    assert mse == pytest.approx(rmse**2, rel=1e-3), last  # the algorithm's mse beside XGBoost's rmse


def test_silent_is_accepted_by_the_images_that_accepted_it():
    """The Projects seed code passes silent=0 to the 1.0-1 image; from 1.2-1 on it is extraneous."""
    assert algo.validate_hyperparameters({"num_round": "5", "silent": "0"}, "1.0-1") == {"num_round": 5}
    assert algo.validate_hyperparameters({"num_round": "5", "silent": "1"}, "1.0-1")["verbosity"] == 0
    with pytest.raises(algo.UserError, match="Extraneous hyperparameter found: silent"):
        algo.validate_hyperparameters({"num_round": "5", "silent": "0"}, "1.7-1")


@pytest.mark.slow
def test_the_python_3_6_image_runs_in_algorithm_mode_on_its_own_pins(store, tmp_path, bwrap_mode):
    """0.90-2 ships Python 3.6, where the algorithm's stand-in cannot run: its pins (xgboost 0.90, pandas 1.0)
    install on 3.7 instead, the job says so, and the model is the pickled Booster that version writes."""
    from mlops.local.images.environments import choose
    from mlops.local.runtime import run_training_job

    image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:0.90-2-cpu-py3"
    assert choose(image).stands_in == "Python 3.7 for the image's 3.6"
    y, x = regression(n=120)
    store.put_bytes("s3://b/data/train/train.csv", csv_text(y, x).encode())
    request = {
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "HyperParameters": {"num_round": "5", "max_depth": "3", "objective": "reg:linear"},
        "InputDataConfig": [{
            "ChannelName": "train", "ContentType": "text/csv",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/data/train"}},
        }],
        "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 5},
        "StoppingCondition": {"MaxRuntimeInSeconds": 300},
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }  # fmt: skip
    lines = []
    res = run_training_job(
        request, job_name="x-090", store=store, job_dir=tmp_path / "j",
        on_log=lambda host, line: lines.append(line),
    )  # fmt: skip
    assert res.status == "Completed", (res.failure_reason, lines[-15:])
    log = "\n".join(lines)
    assert "xgboost 0.90" in log and "train:rmse" in res.metrics, log[-3000:]
    with tarfile.open(store.path("s3://b/models/x-090/output/model.tar.gz")) as tar:
        assert tar.getnames() == ["xgboost-model"]
        blob = tar.extractfile("xgboost-model").read()
    assert blob[:2] == b"\x80\x03" or blob[:1] == b"\x80"  # a pickle, as 0.90 writes it
