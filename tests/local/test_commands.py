"""``mlops run``, ``mlops executions list|show`` and ``mlops models list`` through their argparse handlers."""

import json

import pytest

from mlops.cli.main import main
from mlops.local.state.home import Home

EVALUATE = (
    "import json, os; os.makedirs('/opt/ml/processing/report', exist_ok=True);"
    "json.dump({'multiclass_classification_metrics': {'accuracy': {'value': 0.97}}},"
    " open('/opt/ml/processing/report/evaluation.json', 'w'))"
)
REPORT_URI = {"Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri"}
DEFINITION = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "Threshold", "Type": "Float", "DefaultValue": 0.9}],
    "Steps": [
        {
            "Name": "Evaluate",
            "Type": "Processing",
            "Arguments": {
                "ProcessingResources": {
                    "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
                },
                "AppSpecification": {
                    "ImageUri": "python",
                    "ContainerEntrypoint": ["python3", "-c", EVALUATE],
                },
                "RoleArn": "arn:aws:iam::111122223333:role/R",
                "ProcessingOutputConfig": {
                    "Outputs": [
                        {
                            "OutputName": "report",
                            "S3Output": {
                                "S3Uri": {
                                    "Std:Join": {
                                        "On": "/",
                                        "Values": [
                                            "s3://b",
                                            {"Get": "Execution.PipelineExecutionId"},
                                            "report",
                                        ],
                                    }
                                },
                                "LocalPath": "/opt/ml/processing/report",
                                "S3UploadMode": "EndOfJob",
                            },
                        }
                    ]
                },
            },
            "PropertyFiles": [
                {"PropertyFileName": "Report", "OutputName": "report", "FilePath": "evaluation.json"}
            ],
        },
        {
            "Name": "Check",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [
                    {
                        "Type": "GreaterThanOrEqualTo",
                        "LeftValue": {
                            "Std:JsonGet": {
                                "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"},
                                "Path": "multiclass_classification_metrics.accuracy.value",
                            }
                        },
                        "RightValue": {"Get": "Parameters.Threshold"},
                    }
                ],
                "IfSteps": [
                    {
                        "Name": "Register",
                        "Type": "RegisterModel",
                        "Arguments": {
                            "ModelPackageGroupName": "digits",
                            "ModelApprovalStatus": "PendingManualApproval",
                            "InferenceSpecification": {
                                "Containers": [{"Image": "img", "ModelDataUrl": "s3://b/model.tar.gz"}]
                            },
                            "ModelMetrics": {
                                "ModelQuality": {
                                    "Statistics": {
                                        "ContentType": "application/json",
                                        "S3Uri": {
                                            "Std:Join": {"On": "/", "Values": [REPORT_URI, "evaluation.json"]}
                                        },
                                    }
                                }
                            },
                        },
                    }
                ],
                "ElseSteps": [
                    {
                        "Name": "TooLow",
                        "Type": "Fail",
                        "Arguments": {
                            "ErrorMessage": {
                                "Std:Join": {
                                    "On": " ",
                                    "Values": ["accuracy below", {"Get": "Parameters.Threshold"}],
                                }
                            }
                        },
                    }
                ],
            },
        },
    ],
}


@pytest.fixture
def definition_file(tmp_path):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(DEFINITION))
    return path


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_success_then_list_show_and_models(tmp_path, definition_file, capsys, monkeypatch):
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    home = tmp_path / "home"
    code, out, _ = run_cli(capsys, "run", "--definition", definition_file, "--home", home)
    assert code == 0, out
    # stdout is not a terminal here, so progress comes as plain lines.
    assert "Evaluate: Succeeded" in out and "TooLow: NotExecuted" in out
    execution_id = Home.open(home).runs.list()[0]["id"]
    assert f"execution {execution_id} Succeeded" in out

    code, out, _ = run_cli(capsys, "executions", "list", "--home", home, "--format", "json")
    assert code == 0
    (row,) = json.loads(out)
    assert (row["id"], row["status"], row["pipeline_name"]) == (execution_id, "Succeeded", "pipeline")

    code, out, _ = run_cli(capsys, "executions", "show", execution_id, "--home", home, "--format", "json")
    shown = json.loads(out)
    steps = {s["name"]: s for s in shown["steps"]}
    assert steps["Evaluate"]["status"] == "Succeeded" and steps["Evaluate"]["log_paths"]
    assert steps["TooLow"]["status"] == "NotExecuted"
    assert shown["parameters"] == {"Threshold": 0.9}

    code, out, _ = run_cli(capsys, "executions", "show", execution_id[:6], "--home", home)
    assert code == 0 and "Evaluate" in out and "Register" in out

    code, out, _ = run_cli(
        capsys, "models", "list", "--home", home, "--format", "json", "--status", "PendingManualApproval"
    )
    (package,) = json.loads(out)
    # No image or region ARN in this definition: the region falls back to AWS_REGION, else "local".
    assert package["arn"] == "arn:aws:sagemaker:local:111122223333:model-package/digits/1"
    assert package["metrics"]["ModelQuality.Statistics"]["Content"]["multiclass_classification_metrics"]
    code, out, _ = run_cli(capsys, "models", "list", "--home", home)
    assert code == 0 and "accuracy=0.97" in out
    code, out, _ = run_cli(capsys, "models", "list", "--home", home, "--format", "json", "--group", "other")
    assert json.loads(out) == []


def test_failed_run_exits_1_with_one_line_reason(tmp_path, definition_file, capsys):
    code, out, _ = run_cli(
        capsys, "run", "--definition", definition_file, "--home", tmp_path, "--param", "Threshold=0.99"
    )
    assert code == 1
    execution_id = Home.open(tmp_path).runs.list()[0]["id"]
    assert f"execution {execution_id} Failed: accuracy below 0.99\n" in out
    assert f"mlops run --resume {execution_id}" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--param", "Threshold=high"], "error: parameter Threshold is Float: expected a number, got 'high'"),
        (["--param", "Nope=1"], "error: unknown parameter Nope"),
        (["--param", "Threshold"], "error: --param expects NAME=VALUE"),
        (["--resume", "doesnotexist"], "error: no execution doesnotexist"),
    ],
)
def test_bad_run_arguments_are_refused_before_anything_runs(tmp_path, definition_file, capsys, argv, message):
    code, out, err = run_cli(capsys, "run", "--definition", definition_file, "--home", tmp_path, *argv)
    assert code != 0
    assert err.startswith(message) and err.count("\n") == 1, err
    assert Home.open(tmp_path).runs.list() == []


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "pipeline.json: file not found"),
        ("{not json", "pipeline.json: not valid JSON"),
        ("[]", "expected a JSON object"),
        (
            json.dumps({"Steps": [{"Name": "T", "Type": "EMR", "Arguments": {}}]}),
            "type EMR is not supported",
        ),
    ],
)
def test_bad_definition_files(tmp_path, capsys, content, message):
    path = tmp_path / "pipeline.json"
    if content is not None:
        path.write_text(content)
    code, _, err = run_cli(capsys, "run", "--definition", path, "--home", tmp_path / "home")
    assert code == 2
    assert message in err and err.count("\n") == 1, err


def test_unknown_execution_show(tmp_path, capsys):
    code, _, err = run_cli(capsys, "executions", "show", "nope", "--home", tmp_path)
    assert code == 1 and "no execution 'nope'" in err


def test_env_and_definition_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", "--env", "local", "--definition", str(tmp_path / "x.json")])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
