"""Config: layering, env overrides, and one-line errors naming file, key and reason (exit 2)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from mlops.cli.main import main
from mlops.errors import ConfigError
from tests.project import load_config

from .conftest import ROOT


@pytest.mark.parametrize("env", ["local", "dev", "staging", "prod"])
def test_every_shipped_environment_is_valid(env):
    cfg = load_config(env)
    assert cfg.env == env
    assert cfg.steps.train.instance_count >= 1
    assert cfg.aws.s3_root.startswith("s3://")


def test_overlay_overrides_base_and_keeps_the_rest():
    prod = load_config("prod")
    assert prod.evaluation.threshold == 0.95  # prod.yaml
    assert prod.steps.train.instance_type == "ml.g5.xlarge"  # prod.yaml
    assert prod.steps.train.hyperparameters.batch_size == 64  # base.yaml
    assert prod.aws.network.subnets  # prod has a VPC


def test_environment_variables_override_overlays():
    cfg = load_config(
        "dev", environ={"MLOPS__STEPS__TRAIN__INSTANCE_COUNT": "4", "MLOPS__EVALUATION__THRESHOLD": "0.5"}
    )
    assert cfg.steps.train.instance_count == 4
    assert cfg.evaluation.threshold == 0.5


def _write_overlay(config_dir, overlay: dict, name="bad"):
    (config_dir / f"{name}.yaml").write_text(yaml.safe_dump(overlay))


BASE_LOCAL = yaml.safe_load((ROOT / "config" / "local.yaml").read_text())


def _local_with(path: str, value):
    data = yaml.safe_load(yaml.safe_dump(BASE_LOCAL))
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return data


BAD = [
    # (dotted key, value, expected message)
    ("steps.train.instance_count", 0, "config/bad.yaml: steps.train.instance_count: must be >= 1 (got 0)"),
    (
        "steps.train.instance_count",
        "two",
        "config/bad.yaml: steps.train.instance_count: must be an integer (got 'two')",
    ),
    ("steps.train.instance_cont", 2, "config/bad.yaml: steps.train.instance_cont: unknown key"),
    (
        "aws.role_arn",
        "arn:aws:iam::12:role/x",
        "config/bad.yaml: aws.role_arn: not a valid IAM role ARN (got 'arn:aws:iam::12:role/x')",
    ),
    (
        "schedule.cron",
        "0 3 * * *",
        "config/bad.yaml: schedule.cron: not a valid cron(...), rate(...) or at(...) expression: expected "
        "at(yyyy-mm-ddThh:mm:ss), rate(value unit) or cron(fields) (got '0 3 * * *')",
    ),
    (
        "schedule.cron",
        "cron(0 3 * * MON *)",
        "config/bad.yaml: schedule.cron: not a valid cron(...), rate(...) or at(...) expression: exactly one "
        "of Day-of-month and Day-of-week must be '?' (got 'cron(0 3 * * MON *)')",
    ),
    (
        "schedule.cron",
        "cron(99 99 ? * FOO *)",
        "config/bad.yaml: schedule.cron: not a valid cron(...), rate(...) or at(...) expression: Minutes value "
        "'99' is outside 0-59 (got 'cron(99 99 ? * FOO *)')",
    ),
    (
        "schedule.timezone",
        "Mars/Olympus",
        "config/bad.yaml: schedule.timezone: unknown time zone (got 'Mars/Olympus')",
    ),
    (
        "data.input_uri",
        "https://bucket/raw",
        "config/bad.yaml: data.input_uri: not a valid S3 URI (got 'https://bucket/raw')",
    ),
    ("aws.region", "mars-1", "config/bad.yaml: aws.region: not a valid AWS region (got 'mars-1')"),
    (
        "evaluation.metric",
        "auc",
        "config/bad.yaml: evaluation.metric: must be one of 'accuracy', 'weighted_f1', 'weighted_precision' or 'weighted_recall' (got 'auc')",
    ),
    (
        "steps.train.spot",
        {"enabled": True, "max_wait_s": 60},
        "config/bad.yaml: steps.train: spot.max_wait_s must be >= max_runtime_s (60 < 7200)",
    ),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[f"{k}={v}" for k, v, _ in BAD])
def test_bad_values_give_one_line_naming_file_key_and_reason(config_dir, key, value, message):
    _write_overlay(config_dir, _local_with(key, value))
    with pytest.raises(ConfigError) as err:
        load_config("bad")
    assert str(err.value) == message
    assert "\n" not in str(err.value)


def test_missing_required_key_names_the_key(config_dir):
    data = yaml.safe_load((config_dir / "base.yaml").read_text())
    del data["registry"]["model_package_group"]
    (config_dir / "base.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(
        ConfigError, match=r"^config/base.yaml: registry.model_package_group: required key is missing$"
    ):
        load_config("local")


def test_error_from_environment_variable_names_the_variable():
    with pytest.raises(ConfigError) as err:
        load_config("local", environ={"MLOPS__STEPS__TRAIN__INSTANCE_COUNT": "0"})
    assert (
        str(err.value)
        == "$MLOPS__STEPS__TRAIN__INSTANCE_COUNT: steps.train.instance_count: must be >= 1 (got 0)"
    )


def test_unknown_environment_and_bad_yaml(config_dir):
    with pytest.raises(ConfigError, match=r"unknown environment 'nope' \(known: dev, local, prod, staging\)"):
        load_config("nope")
    (config_dir / "broken.yaml").write_text("aws: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: not valid YAML \(line \d+\)"):
        load_config("broken")


def test_cli_exit_code_2_and_one_red_line_and_nothing_written(config_dir, tmp_path, capsys):
    _write_overlay(config_dir, _local_with("steps.train.instance_count", 0))
    out = tmp_path / "out"
    assert main(["compile", "--env", "bad", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: config/bad.yaml: steps.train.instance_count: must be >= 1 (got 0)"
    assert not out.exists()


def test_cli_subprocess_exit_code(config_dir):
    _write_overlay(config_dir, _local_with("aws.bucket", "Bad_Bucket"))
    proc = subprocess.run(
        [sys.executable, "-m", "mlops.cli", "config", "--env", "bad"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert re.fullmatch(
        r"error: config/bad.yaml: aws.bucket: not a valid S3 bucket name \(got 'Bad_Bucket'\)\n", proc.stderr
    )


def test_no_account_region_role_bucket_or_instance_type_in_python_code():
    pattern = re.compile(
        r"\b\d{12}\b|[a-z]{2}-(east|west|central|north|south)-\d|\bml\.[a-z0-9]+\.[a-z0-9]+\b"
    )
    offenders = []
    for path in [p for top in ("mlops", "pipelines", "steps") for p in (ROOT / top).rglob("*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "noqa: config" not in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


@pytest.mark.parametrize(
    "text, reason",
    [
        ("expectations: [unclosed\n", r"not valid YAML at line \d+: "),
        ("name: digits\n", "expected a mapping with a non-empty 'expectations' list"),
        ("expectations:\n  - kwargs: {}\n", r"entry 0: expected a mapping with a 'type'"),
        (
            "expectations:\n  - type: expect_x\n    kwargs: [1]\n",
            r"entry 0 \(expect_x\): 'kwargs' must be a mapping",
        ),
        (
            "expectations:\n  - type: expect_x\n    splits: [nope]\n",
            r"entry 0 \(expect_x\): 'splits' must be",
        ),
    ],
)
def test_a_broken_expectation_suite_fails_config_with_the_file_named(config_dir, text, reason):
    suite = config_dir / "broken-suite.yaml"
    suite.write_text(text)
    rel = suite.relative_to(ROOT) if suite.is_relative_to(ROOT) else None
    if rel is None:  # the suite must live inside the project: put it there for the test
        target = ROOT / "build" / "test-suites" / f"{config_dir.parent.name}.yaml"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        rel = target.relative_to(ROOT)
    try:
        _write_overlay(config_dir, _local_with("data.expectation_suite", str(rel)))
        with pytest.raises(ConfigError) as err:
            load_config("bad")
        assert re.search(rf"data.expectation_suite: {re.escape(str(rel))}: {reason}", str(err.value)), str(
            err.value
        )
        assert "\n" not in str(err.value)
        assert main(["validate", "--env", "bad"]) == 2
    finally:
        (ROOT / rel).unlink(missing_ok=True)
        for folder in (ROOT / "build" / "test-suites", ROOT / "build"):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()  # leave the checkout as it was


def test_a_suite_outside_the_project_is_refused(config_dir):
    _write_overlay(config_dir, _local_with("data.expectation_suite", "../../../etc/passwd"))
    with pytest.raises(ConfigError) as err:
        load_config("bad")
    assert "data.expectation_suite: must be a file inside the project (got '../../../etc/passwd')" in str(
        err.value
    )


def test_config_warns_about_the_placeholder_account_but_exits_0(config_dir, capsys):
    assert main(["config", "--env", "dev"]) == 0
    captured = capsys.readouterr()
    warning = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "placeholder account id" in warning[0] and "aws.role_arn" in warning[0]
    assert "ok config/dev.yaml" in captured.out
    _write_overlay(config_dir, _local_with("aws.role_arn", "arn:aws:iam::210987654321:role/r"), name="own")
    assert main(["config", "--env", "own"]) == 0
    assert "warning" not in capsys.readouterr().err
