"""Config ``tracking.mlflow``: its one-line errors, and the compiled model-build definition's MlflowConfig
(SageMaker's managed MLflow tracking server) when it is enabled with a server ARN; null otherwise."""

from __future__ import annotations

import pytest
import yaml

from mlops.config import reference
from mlops.definition.validate import validate_definition
from mlops.errors import ConfigError
from tests.project import PROJECT, load_config

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:mlflow-tracking-server/digits-dev"


def _overlay(config_dir, name: str, mlflow: dict) -> None:
    data = yaml.safe_load((config_dir / "dev.yaml").read_text())
    data["tracking"] = {"mlflow": mlflow}
    (config_dir / f"{name}.yaml").write_text(yaml.safe_dump(data))


BAD = [
    # (tracking.mlflow in an AWS environment's overlay, expected message)
    (
        {"enabled": True},
        "config/bad.yaml: tracking.mlflow: tracking_server_arn is required when enabled is true in 'bad': the "
        "ARN of the SageMaker MLflow tracking server (arn:aws:sagemaker:REGION:ACCOUNT:mlflow-tracking-server/NAME)",
    ),
    (
        {"enabled": True, "tracking_server_arn": "arn:aws:sagemaker:eu-west-1:12:mlflow-tracking-server/x"},
        "config/bad.yaml: tracking.mlflow.tracking_server_arn: not a valid SageMaker MLflow tracking server ARN "
        "(got 'arn:aws:sagemaker:eu-west-1:12:mlflow-tracking-server/x')",
    ),
    (
        {"experiment": "{project}-{stage}"},
        "config/bad.yaml: tracking.mlflow.experiment: only {project} and {env} may be replaced in the experiment "
        "name (got '{project}-{stage}')",
    ),
    (
        {"enabled": "sometimes"},
        "config/bad.yaml: tracking.mlflow.enabled: must be true or false (got 'sometimes')",
    ),
    ({"server": "x"}, "config/bad.yaml: tracking.mlflow.server: unknown key"),
]


@pytest.mark.parametrize("mlflow,message", BAD, ids=[str(m) for m, _ in BAD])
def test_bad_tracking_config_is_one_line_naming_the_key(config_dir, mlflow, message):
    _overlay(config_dir, "bad", mlflow)
    with pytest.raises(ConfigError) as err:
        load_config("bad")
    assert str(err.value) == message


def test_off_by_default_and_local_needs_no_server_arn():
    for env in ("local", "dev", "staging", "prod"):
        assert load_config(env).tracking.mlflow.enabled is False
    local = load_config("local", environ={"MLOPS__TRACKING__MLFLOW__ENABLED": "true"})
    assert local.tracking.mlflow.enabled and local.tracking.mlflow.tracking_server_arn is None
    assert local.tracking.mlflow.experiment_name(local.project.name, local.env) == "digits-local"


def test_enabled_without_an_arn_names_the_variable_that_enabled_it():
    with pytest.raises(
        ConfigError,
        match=r"^\$MLOPS__TRACKING__MLFLOW__ENABLED: tracking.mlflow: tracking_server_arn is required",
    ):
        load_config("dev", environ={"MLOPS__TRACKING__MLFLOW__ENABLED": "true"})


def test_every_tracking_field_is_described_for_the_reference():
    rows = [r for r in reference(PROJECT.declaration.config_schema) if r[0].startswith("tracking")]
    assert {r[0] for r in rows} >= {"tracking", "tracking.mlflow", "tracking.mlflow.enabled",
                                    "tracking.mlflow.tracking_server_arn", "tracking.mlflow.experiment"}  # fmt: skip
    assert all(r[3].strip() for r in rows)


def test_the_compiled_definition_names_the_tracking_server_when_enabled():
    from mlops.compile.compiler import compile_pipelines

    cfg = load_config("dev", environ={"MLOPS__TRACKING__MLFLOW__ENABLED": "true",
                                      "MLOPS__TRACKING__MLFLOW__TRACKING_SERVER_ARN": ARN})  # fmt: skip
    compiled = compile_pipelines(PROJECT, cfg)
    build = compiled.definition("model-build")
    assert build["MlflowConfig"] == {"MlflowResourceArn": ARN, "MlflowExperimentName": "digits-dev"}
    assert validate_definition(build) == []
    assert compiled.definition("model-deploy")["MlflowConfig"] is None  # the deploy pipeline trains nothing


def test_the_compiled_definition_has_no_mlflow_config_when_disabled(compiled_local):
    assert compiled_local.definition("model-build")["MlflowConfig"] is None
