"""The step scripts under the SageMaker container contract: real processes in a bwrap sandbox at /opt/ml.

Each test lays out /opt/ml the way SageMaker would (inputs, config JSON, code), runs the script as the
container would, and checks what a pipeline would see: files, exit codes, log lines, failure messages.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from steps.preprocess.data import COLUMNS, write_digits_csv
from steps.train.metrics import METRIC_DEFINITIONS

from .conftest import ROOT
from .container import VENV_BIN, run_in_container

STEPS = ROOT / "steps"
SUITE = ROOT / "config" / "expectations" / "digits.yaml"
SPLITS = ("train", "validation", "test")
PY = str(VENV_BIN / "python")


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def _check(result, code: int = 0):
    assert result.returncode == code, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result


def processing_sandbox(root: Path, code: Path) -> Path:
    """An /opt/ml for a processing job with its code at processing/input/code (as SageMaker ships it)."""
    (root / "processing" / "input" / "code").mkdir(parents=True)
    shutil.copy2(code, root / "processing" / "input" / "code" / code.name)
    return root


def run_preprocess(root: Path, raw_files: list[Path], host: str = "algo-1", hosts=("algo-1",), extra=()):
    processing_sandbox(root, STEPS / "preprocess" / "code" / "preprocess.py")
    raw = root / "processing" / "input" / "raw"
    raw.mkdir(parents=True)
    for f in raw_files:
        shutil.copy2(f, raw / f.name)
    (root / "config").mkdir()
    (root / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": host, "hosts": list(hosts)})
    )
    cmd = [PY, "/opt/ml/processing/input/code/preprocess.py", "--seed", "11", *extra]
    return run_in_container(cmd, root, hostname=host)


def read_split(folder: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(f) for f in sorted(folder.glob("*.csv"))], ignore_index=True)


@pytest.fixture(scope="module")
def digits_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "digits.csv"
    write_digits_csv(path)
    return path


@pytest.fixture(scope="module")
def splits(tmp_path_factory, digits_csv) -> Path:
    """Preprocess output for the whole digits set on one instance: <dir>/{train,validation,test}/part-algo-1.csv."""
    root = tmp_path_factory.mktemp("preprocess")
    result = _check(run_preprocess(root, [digits_csv]))
    assert "algo-1: read 1797 rows" in result.stdout
    return root / "processing" / "output"


# --- preprocess ---------------------------------------------------------------------------------------


def test_preprocess_splits_every_row_once_in_the_configured_ratios(splits):
    frames = {s: pd.read_csv(splits / s / "part-algo-1.csv") for s in SPLITS}
    sizes = {s: len(f) for s, f in frames.items()}
    assert sum(sizes.values()) == 1797
    for split, ratio in zip(SPLITS, (0.7, 0.15, 0.15), strict=True):
        assert abs(sizes[split] / 1797 - ratio) < 0.04, sizes
    for frame in frames.values():
        assert list(frame.columns) == COLUMNS
        assert (frame.dtypes == np.int64).all()
    together = pd.concat(frames.values())
    assert not together.duplicated().any()


def test_preprocess_assigns_rows_to_splits_the_same_however_files_are_sharded(tmp_path, digits_csv, splits):
    frame = pd.read_csv(digits_csv)
    parts = []
    for i, rows in enumerate(np.array_split(np.arange(len(frame)), 3)):
        parts.append(tmp_path / f"digits-{i}.csv")
        frame.iloc[rows].to_csv(parts[-1], index=False)
    # ShardedByS3Key: algo-1 gets files 0 and 2, algo-2 gets file 1, algo-3 gets none.
    hosts = ("algo-1", "algo-2", "algo-3")
    _check(run_preprocess(tmp_path / "a1", [parts[0], parts[2]], "algo-1", hosts))
    _check(run_preprocess(tmp_path / "a2", [parts[1]], "algo-2", hosts))
    idle = _check(run_preprocess(tmp_path / "a3", [], "algo-3", hosts))
    assert "algo-3: no CSV files in this shard; writing no parts" in idle.stdout
    assert not (tmp_path / "a3" / "processing" / "output").exists()
    for split in SPLITS:
        sharded = pd.concat(
            [
                pd.read_csv(tmp_path / h / "processing/output" / split / f"part-algo-{h[-1]}.csv")
                for h in ("a1", "a2")
            ]
        )
        single = pd.read_csv(splits / split / "part-algo-1.csv")
        key = lambda df: sorted(map(tuple, df.to_numpy().tolist()))  # noqa: E731
        assert key(sharded) == key(single), split


def test_preprocess_cleans_but_does_not_repair(tmp_path):
    header = " , ".join(COLUMNS)  # whitespace around names must be stripped
    good = ",".join(["1"] * 64 + ["3"])
    rows = [
        good,
        good,  # exact duplicate: dropped
        "," * 64,  # fully empty: dropped
        ",".join(["2"] * 63 + ["99", "4"]),  # out of range: kept for the gate
        ",".join(["2"] * 64 + ["12"]),  # unknown label: kept
        ",".join(["x"] + ["5"] * 63 + ["1"]),  # not a number: kept as a null
    ]
    raw = tmp_path / "dirty.csv"
    raw.write_text(header + "\n" + "\n".join(rows) + "\n")
    result = _check(run_preprocess(tmp_path / "sb", [raw]))
    assert "kept 4 rows; dropped 1 empty and 1 duplicate rows; 1 non-numeric cells" in result.stdout
    out = read_split(tmp_path / "sb" / "processing" / "output" / "train").pipe(
        lambda df: pd.concat([df, read_split(tmp_path / "sb/processing/output/validation")])
    )
    out = pd.concat([out, read_split(tmp_path / "sb/processing/output/test")], ignore_index=True)
    assert list(out.columns) == COLUMNS
    assert len(out) == 4
    assert out["pixel_63"].max() == 99
    assert 12 in set(out["label"])
    assert out["pixel_0"].isna().sum() == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train-ratio", "0.9"], "split ratios must be >= 0 and sum to 1"),
        (["--test-ratio", "-0.15", "--train-ratio", "1.0"], "split ratios must be >= 0 and sum to 1"),
        (["--seed", "abc"], "invalid int value"),
    ],
)
def test_preprocess_rejects_bad_arguments(tmp_path, digits_csv, args, message):
    result = run_preprocess(tmp_path, [digits_csv], extra=args)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "processing" / "output").exists()


# --- validate_data --------------------------------------------------------------------------------------


def run_validate(root: Path, split_frames: dict[str, pd.DataFrame], suite: Path = SUITE):
    processing_sandbox(root, STEPS / "validate_data" / "code" / "validate.py")
    for split, frame in split_frames.items():
        (root / "processing" / "input" / split).mkdir(parents=True)
        frame.to_csv(root / "processing" / "input" / split / "part-algo-1.csv", index=False)
    (root / "processing" / "input" / "suite").mkdir()
    shutil.copy2(suite, root / "processing" / "input" / "suite" / "suite.yaml")
    cmd = [
        PY,
        "/opt/ml/processing/input/code/validate.py",
        "--suite",
        "/opt/ml/processing/input/suite/suite.yaml",
    ]
    return run_in_container(cmd, root)


@pytest.mark.slow
def test_validate_passes_clean_splits_and_writes_report_and_data_docs(tmp_path, splits):
    frames = {s: pd.read_csv(splits / s / "part-algo-1.csv") for s in SPLITS}
    result = _check(run_validate(tmp_path, frames))
    assert "data quality passed" in result.stdout
    report_dir = tmp_path / "processing" / "output" / "report"
    report = json.loads((report_dir / "validation.json").read_text())
    assert report["success"] is True
    assert set(report["splits"]) == set(SPLITS)
    assert all(r["success"] for r in report["splits"].values())
    assert report["splits"]["train"]["statistics"]["evaluated_expectations"] == 197
    index = (report_dir / "data_docs" / "index.html").read_text()
    assert "digits.train" in index
    assert not (tmp_path / "output" / "message").exists()


CORRUPTIONS = [
    # (split, column, bad value, clause the summary must hold); None means an empty cell.
    ("test", "pixel_3", 17, "test.pixel_3 expect_column_values_to_be_between (1 row out of [0, 16])"),
    ("train", "label", 11, "train.label expect_column_values_to_be_in_set (1 unexpected: 11)"),
    ("validation", "pixel_5", None, "validation.pixel_5 expect_column_values_to_not_be_null (1 row null)"),
]


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory, splits):
    """One gate run over three splits, each corrupted as one row of CORRUPTIONS says (one GX start-up)."""
    frames = {}
    for split, column, value, _ in CORRUPTIONS:
        frame = pd.read_csv(splits / split / "part-algo-1.csv")
        if value is None:
            frame[column] = frame[column].astype("float64")
            value = np.nan
        frame.loc[3, column] = value
        frames[split] = frame
    root = tmp_path_factory.mktemp("corrupted")
    result = run_validate(root, frames)
    return root, result


@pytest.mark.slow
@pytest.mark.parametrize(
    "split, column, value, clause", CORRUPTIONS, ids=["out-of-range-pixel", "unknown-label", "null-pixel"]
)
def test_validate_fails_corrupted_splits_naming_each_problem(corrupted, split, column, value, clause):
    root, result = corrupted
    assert result.returncode == 1, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    # The null also turns the integer column into floats: that is a second, honest failure.
    assert summary.startswith("data quality failed: 4 of 591 expectations: ")
    assert clause in summary


@pytest.mark.slow
def test_failed_gate_still_writes_report_data_docs_and_failure_reason(corrupted):
    root, result = corrupted
    summary = result.stderr.strip().splitlines()[-1]
    assert (root / "output" / "message").read_text().strip() == summary
    report = json.loads((root / "processing" / "output" / "report" / "validation.json").read_text())
    assert report["success"] is False and report["summary"] == summary
    assert [report["splits"][s]["success"] for s in SPLITS] == [False, False, False]
    assert (root / "processing" / "output" / "report" / "data_docs" / "index.html").is_file()


@pytest.mark.slow
def test_validate_fails_when_split_is_too_small_or_columns_missing(tmp_path, splits):
    frame = pd.read_csv(splits / "test" / "part-algo-1.csv").head(20).drop(columns=["pixel_7"])
    result = run_validate(tmp_path, {"test": frame})
    assert result.returncode == 1
    summary = result.stderr.strip().splitlines()[-1]
    assert "test expect_table_row_count_to_be_between (observed 20, expected [100, None])" in summary
    assert "test expect_table_columns_to_match_ordered_list (missing pixel_7)" in summary


SUITE_ERRORS = [
    ("expectations: []", "expected a mapping with a non-empty 'expectations' list"),
    (
        "expectations:\n  - type: expect_column_values_to_be_purple\n    column: label",
        "entry 0: unknown expectation type 'expect_column_values_to_be_purple'",
    ),
    (
        "expectations:\n  - type: expect_column_values_to_be_between\n    column: label\n    kwargs: {min_value: low}",
        "entry 0 (expect_column_values_to_be_between) (column 'label'): bad kwargs: min_value",
    ),
    (
        "expectations:\n  - {type: expect_table_row_count_to_be_between}\n  - type: expect_column_values_to_not_be_null\n    columns: 'pixel_*'",
        "entry 1 (expect_column_values_to_not_be_null): 'columns' globs need an expect_table_columns_to_match_ordered_list entry",
    ),
    (
        "expectations:\n  - type: expect_table_columns_to_match_ordered_list\n    kwargs: {column_list: [a]}\n  - type: expect_column_values_to_not_be_null\n    columns: 'pixel_*'",
        "entry 1 (expect_column_values_to_not_be_null): 'columns' ['pixel_*'] match no column",
    ),
    (
        "expectations:\n  - type: expect_table_row_count_to_be_between\n    splits: [holdout]",
        "'splits' must be a non-empty list of ['train', 'validation', 'test']",
    ),
    (
        "expectations:\n  - type: expect_table_row_count_to_be_between\n    colour: red",
        "entry 0: unknown key(s) ['colour']",
    ),
    ("expectations: [1, 2", "not valid YAML at line"),
]


@pytest.fixture(scope="module")
def validate_module():
    return _import(STEPS / "validate_data" / "code" / "validate.py", "validate_script")


@pytest.mark.parametrize("text, message", SUITE_ERRORS, ids=range(len(SUITE_ERRORS)))
def test_bad_suite_yaml_is_one_line_error_naming_file_and_entry(tmp_path, validate_module, text, message):
    path = tmp_path / "suite.yaml"
    path.write_text(text + "\n")
    with pytest.raises(validate_module.SuiteError) as err:
        validate_module.load_suite(path)
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert message in line


def test_shipped_suite_covers_schema_types_nulls_ranges_labels_and_row_counts(validate_module):
    suite = validate_module.load_suite(SUITE)
    kinds = {e.type for e in suite.entries}
    assert {
        "expect_table_columns_to_match_ordered_list",
        "expect_column_values_to_be_in_type_list",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_between",
        "expect_column_values_to_be_in_set",
        "expect_table_row_count_to_be_between",
    } <= kinds
    assert len(suite.expectations_for("train")) == 197
    nulls = [e.kwargs["column"] for e in suite.entries if e.type == "expect_column_values_to_not_be_null"]
    assert nulls == COLUMNS


def test_validate_with_bad_suite_exits_2_and_writes_failure_reason(tmp_path, splits):
    bad = tmp_path / "bad.yaml"
    # A structural error is caught before GX is even imported, so this run stays quick.
    bad.write_text("expectations:\n  - type: expect_nothing_at_all\n    colour: red\n")
    result = run_validate(
        tmp_path / "sb", {"test": pd.read_csv(splits / "test" / "part-algo-1.csv")}, suite=bad
    )
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line == (
        "invalid data-quality suite: /opt/ml/processing/input/suite/suite.yaml: entry 0: "
        "unknown key(s) ['colour'] (allowed: ['column', 'columns', 'kwargs', 'meta', 'splits', 'type'])"
    )
    assert (tmp_path / "sb" / "output" / "message").read_text().strip() == line


# --- train, evaluate, inference --------------------------------------------------------------------------


def train_sandbox(root: Path, splits: Path) -> Path:
    """An /opt/ml laid out as SageMaker's training toolkit does: channels, code, resource config."""
    data = root / "input" / "data"
    for channel in ("train", "validation"):
        shutil.copytree(splits / channel, data / channel)
    shutil.copytree(STEPS / "train" / "code", data / "code")
    (root / "input" / "config").mkdir(parents=True)
    (root / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"})
    )
    return root


TRAIN_ENV = {
    "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
    "SM_CHANNEL_VALIDATION": "/opt/ml/input/data/validation",
    "SM_MODEL_DIR": "/opt/ml/model",
    "SM_CURRENT_HOST": "algo-1",
    "SM_HOSTS": '["algo-1"]',
}


def run_train(root: Path, epochs: int, ranks: int = 2):
    """The command the SDK's torchrun driver builds for one host; ``ranks=0`` runs the script bare."""
    launcher = [str(VENV_BIN / "torchrun"), "--nnodes=1", f"--nproc_per_node={ranks}"] if ranks else [PY]
    hyperparameters = ["--epochs", str(epochs), "--batch_size", "64", "--learning_rate", "0.003"]
    hyperparameters += ["--hidden_units", "128", "--seed", "7"]
    return run_in_container(
        [*launcher, "/opt/ml/input/data/code/train.py", *hyperparameters], root, env=TRAIN_ENV
    )


def metric_values(log: str) -> dict[str, list[float]]:
    return {m["Name"]: [float(v) for v in re.findall(m["Regex"], log)] for m in METRIC_DEFINITIONS}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, splits) -> tuple[Path, str]:
    root = train_sandbox(tmp_path_factory.mktemp("train"), splits)
    result = _check(run_train(root, epochs=12))
    return root, result.stdout


@pytest.mark.slow
def test_ddp_training_logs_metrics_saves_model_and_checkpoint(trained):
    root, log = trained
    assert "world size 2 on cpu" in log
    values = metric_values(log)
    assert [len(v) for v in values.values()] == [12, 12, 12]  # rank 0 only: one line per epoch
    assert values["train:loss"][-1] < values["train:loss"][0]
    assert values["validation:accuracy"][-1] >= 0.9
    model_dir = root / "model"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()) == [
        "code/inference.py",
        "code/model.py",
        "model.pth",
        "model_config.json",
    ]
    assert json.loads((model_dir / "model_config.json").read_text()) == {
        "input_size": 64,
        "hidden_units": 128,
        "num_classes": 10,
    }
    state = torch.load(root / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 12
    assert not any(p.name.endswith(".tmp") for p in (root / "checkpoints").iterdir())


@pytest.mark.slow
def test_ddp_teardown_never_aborts_a_rank(tmp_path, splits):
    """The teardown SIGABRT (``terminate called without an active exception`` in rank 1) came from a process
    group left to interpreter shutdown; train.py now leaves it explicitly. Run it back to back: never again."""
    for attempt in range(3):
        root = train_sandbox(tmp_path / f"run-{attempt}", splits)
        result = run_train(root, epochs=1)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "terminate called" not in output, output[-2000:]
        assert "SIGABRT" not in output and "Signal 6" not in output


@pytest.mark.slow
def test_restarted_training_resumes_from_the_checkpoint(tmp_path, trained):
    root, _ = trained
    copy = tmp_path / "ml"
    shutil.copytree(root, copy)
    # Restarted without torchrun (no WORLD_SIZE): the single-process path, from the DDP run's checkpoint.
    result = _check(run_train(copy, epochs=14, ranks=0))
    assert "resumed from epoch 12" in result.stdout
    assert "world size 1 on cpu" in result.stdout
    assert re.findall(r"^epoch=(\d+) ", result.stdout, re.M) == ["13", "14"]
    assert torch.load(copy / "checkpoints" / "checkpoint.pt", weights_only=True)["epoch"] == 14


@pytest.mark.slow
def test_evaluate_scores_the_test_split_through_the_serving_code(tmp_path, trained, splits):
    model_root, _ = trained
    root = processing_sandbox(tmp_path, STEPS / "evaluate" / "code" / "evaluate.py")
    (root / "processing" / "input" / "model").mkdir(parents=True)
    with tarfile.open(root / "processing" / "input" / "model" / "model.tar.gz", "w:gz") as tar:
        for path in sorted((model_root / "model").rglob("*")):
            tar.add(path, arcname=path.relative_to(model_root / "model").as_posix(), recursive=False)
    shutil.copytree(splits / "test", root / "processing" / "input" / "test")
    result = _check(run_in_container([PY, "/opt/ml/processing/input/code/evaluate.py"], root))
    assert re.search(r"accuracy=0\.\d{4} on \d+ test rows", result.stdout)
    report = json.loads((root / "processing" / "evaluation" / "evaluation.json").read_text())
    metrics = report["multiclass_classification_metrics"]
    assert set(metrics) == {
        "accuracy",
        "weighted_f1",
        "weighted_precision",
        "weighted_recall",
        "confusion_matrix",
    }
    assert metrics["accuracy"]["value"] >= 0.9
    assert metrics["accuracy"]["standard_deviation"] == "NaN"
    matrix = metrics["confusion_matrix"]
    assert list(matrix) == [str(i) for i in range(10)]
    n_test = len(pd.read_csv(splits / "test" / "part-algo-1.csv"))
    assert sum(sum(row.values()) for row in matrix.values()) == n_test
    correct = sum(matrix[str(i)][str(i)] for i in range(10))
    assert correct / n_test == pytest.approx(metrics["accuracy"]["value"])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A model directory in the serving layout (untrained weights: these tests are about the handlers)."""
    model_dir = tmp_path_factory.mktemp("model")
    shutil.copytree(STEPS / "train" / "code", model_dir / "code", ignore=shutil.ignore_patterns("train.py"))
    handlers = _import(model_dir / "code" / "inference.py", "inference_under_test")
    config = {"input_size": 64, "hidden_units": 16, "num_classes": 10}
    torch.manual_seed(0)
    model_module = _import(model_dir / "code" / "model.py", "model_under_test")
    torch.save(model_module.build_model(config).state_dict(), model_dir / "model.pth")
    (model_dir / "model_config.json").write_text(json.dumps(config))
    return handlers, handlers.model_fn(str(model_dir))


ROW = [0, 1, 16] + [4] * 61


@pytest.mark.parametrize(
    "body, content_type, rows",
    [
        (json.dumps({"instances": [ROW, ROW]}), "application/json", 2),
        (json.dumps([ROW, ROW, ROW]), "application/json", 3),
        (json.dumps(ROW).encode(), "application/json; charset=utf-8", 1),
        (",".join(map(str, ROW)) + "\n" + ",".join(map(str, ROW)) + "\n\n", "text/csv", 2),
    ],
    ids=["instances", "bare-rows", "one-row-bytes", "csv"],
)
def test_inference_handlers_round_trip(served, body, content_type, rows):
    handlers, model = served
    out = json.loads(
        handlers.output_fn(
            handlers.predict_fn(handlers.input_fn(body, content_type), model), "application/json"
        )
    )
    assert len(out["predictions"]) == rows
    for prediction in out["predictions"]:
        assert prediction["label"] in range(10)
        assert len(prediction["probabilities"]) == 10
        assert sum(prediction["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert prediction["label"] == int(np.argmax(prediction["probabilities"]))


@pytest.mark.parametrize(
    "body, content_type, message",
    [
        ("{not json", "application/json", "request body is not valid JSON"),
        (json.dumps({"rows": [ROW]}), "application/json", "must have an 'instances' list"),
        (json.dumps({"instances": []}), "application/json", "request has no rows"),
        (json.dumps([ROW, ROW[:10]]), "application/json", "row 1 has 10 values; every row needs 64"),
        (json.dumps([ROW[:-1] + ["seven"]]), "application/json", "row 0 has a value that is not a number"),
        (json.dumps([ROW[:-1] + [None]]), "application/json", "row 0 has a value that is not a number"),
        ("1,2,3\n", "text/csv", "each row needs 64 values (got 3)"),
        ("1,2,nan" + ",1" * 61, "text/csv", "row 0 has a value that is not a finite number"),
        ("", "text/csv", "request has no rows"),
        ("<xml/>", "application/xml", "unsupported content type 'application/xml'"),
    ],
)
def test_bad_requests_raise_value_error_with_a_clear_message(served, body, content_type, message):
    handlers, model = served
    with pytest.raises(ValueError, match=re.escape(message)):
        handlers.predict_fn(handlers.input_fn(body, content_type), model)


def test_output_fn_rejects_unsupported_accept(served):
    handlers, model = served
    prediction = handlers.predict_fn(handlers.input_fn(json.dumps(ROW), "application/json"), model)
    with pytest.raises(ValueError, match="unsupported accept type 'text/html'"):
        handlers.output_fn(prediction, "text/html")
