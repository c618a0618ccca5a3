"""What a training container runs when its request names no command, and ``mlops run --check``."""

from __future__ import annotations

import json
import sys

import pytest

from mlops.cli.main import main
from mlops.local.images.launch import ImageLaunchError, training_launch

ECR = "683313688378.dkr.ecr.us-east-1.amazonaws.com"
DLC = "763104351884.dkr.ecr.us-east-1.amazonaws.com"


def test_a_request_with_a_command_runs_it():
    spec = {
        "TrainingImage": "img",
        "ContainerEntrypoint": ["python3", "t.py"],
        "ContainerArguments": ["--x", 1],
    }
    launch = training_launch(spec, {})
    assert (launch.kind, launch.argv) == ("entrypoint", ["python3", "t.py", "--x", "1"])


@pytest.mark.parametrize(
    "image, module",
    [
        (f"{DLC}/pytorch-training:1.5.0-cpu-py3", "sagemaker_pytorch_container.training:main"),
        (f"{DLC}/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04",
         "sagemaker_pytorch_container.training:main"),
        (f"{ECR}/sagemaker-scikit-learn:1.2-1-cpu-py3", None),
        (f"{ECR}/sagemaker-xgboost:1.7-1", None),  # framework mode: sagemaker_program wins over the algorithm
    ],
)  # fmt: skip
def test_framework_estimators_run_through_the_training_toolkit(image, module):
    # SDK v2 JSON-encodes every hyperparameter value; v3 does not: both name the program
    for program in ('"train.py"', "train.py"):
        launch = training_launch({"TrainingImage": image}, {"sagemaker_program": program})
        assert launch.kind == "framework"
        assert launch.argv == ["python3", "-m", "sagemaker_training.cli.train"]
        assert launch.env.get("SAGEMAKER_TRAINING_MODULE") == module
        assert "train.py" in launch.description


def test_built_in_xgboost_runs_in_algorithm_mode():
    launch = training_launch({"TrainingImage": f"{ECR}/sagemaker-xgboost:1.7-1"}, {"num_round": "10"})
    assert launch.kind == "algorithm" and launch.argv[2:] == [
        "train",
        "--image",
        f"{ECR}/sagemaker-xgboost:1.7-1",
    ]
    [(target, source)] = launch.mounts
    assert launch.argv[1] == target and source.name == "xgboost_algorithm.py" and source.is_file()
    # SageMaker attaches the algorithm's metric definitions itself
    assert {"train:rmse", "validation:rmse", "validation:auc"} <= {
        m["Name"] for m in launch.metric_definitions
    }


@pytest.mark.parametrize(
    "spec, words",
    [
        ({"TrainingImage": f"{ECR}/kmeans:1"}, "built-in algorithm 'kmeans'"),
        ({"TrainingImage": f"{ECR}/linear-learner:1"}, "built-in algorithm 'linear-learner'"),
        ({"AlgorithmName": "arn:aws:sagemaker:us-east-1:111122223333:algorithm/mine"}, "algorithm resources"),
        ({"TrainingImage": "111122223333.dkr.ecr.us-east-1.amazonaws.com/mine:1"}, "ContainerEntrypoint is missing"),
    ],
)  # fmt: skip
def test_what_cannot_run_locally_is_named(spec, words):
    with pytest.raises(ImageLaunchError, match=words) as err:
        training_launch(spec, {})
    assert "\n" not in str(err.value)


def _training(name: str, image: str, hps: dict | None = None, entry: list | None = None) -> dict:
    spec = {"TrainingImage": image, "TrainingInputMode": "File"}
    if entry:
        spec["ContainerEntrypoint"] = entry
    return {
        "Name": name,
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": spec,
            "HyperParameters": hps or {},
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5},
            "RoleArn": "arn:aws:iam::111122223333:role/r",
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        },
    }


@pytest.fixture
def mixed_definition(tmp_path):
    definition = {
        "Version": "2020-12-01",
        "Parameters": [],
        "Steps": [
            _training("Script", "python", entry=["python3", "-c", "pass"]),
            _training("Framework", f"{DLC}/pytorch-training:2.5-cpu-py311", {"sagemaker_program": '"t.py"'}),
            _training("XGBoost", f"{ECR}/sagemaker-xgboost:1.7-1", {"num_round": "5"}),
            _training("KMeans", f"{ECR}/kmeans:1", {"k": "3"}),
            {"Name": "Tune", "Type": "Tuning", "Arguments": {}},
            {"Name": "Notify", "Type": "Lambda", "FunctionArn": "arn:aws:lambda:us-east-1:111122223333:function:f",
             "Arguments": {}},
        ],
    }  # fmt: skip
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(definition))
    return path


def test_check_lists_every_step_and_every_blocker_at_once(mixed_definition, tmp_path, capsys):
    code = main(["run", "--check", str(mixed_definition), "--home", str(tmp_path / "home")])
    out = capsys.readouterr().out
    assert code == 1
    assert "3 blocker(s)" in out
    for words in ("step KMeans: built-in algorithm 'kmeans'", "step Tune: HyperParameterTuningJobConfig: missing",
                  "step Notify: no local handler for Lambda function arn:aws:lambda:us-east-1:111122223333:function:f",
                  "framework mode through sagemaker-training: t.py",
                  "built-in XGBoost 1.7-1 in algorithm mode", "the request's ContainerEntrypoint"):  # fmt: skip
        assert words in out, words
    assert not (tmp_path / "home").exists()  # nothing ran, nothing was recorded


def test_check_as_json_and_run_refuses_on_the_first_blocker(mixed_definition, tmp_path, capsys):
    code = main(["run", "--check", "--definition", str(mixed_definition), "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["runnable"] is False
    assert [s["name"] for s in doc["steps"] if s["blockers"]] == ["KMeans", "Notify", "Tune"]  # by name
    assert {s["name"]: s["image"] for s in doc["steps"]}["XGBoost"] == f"{ECR}/sagemaker-xgboost:1.7-1"

    code = main(["run", "--definition", str(mixed_definition), "--home", str(tmp_path / "home")])
    err = capsys.readouterr().err
    assert code != 0
    assert "step KMeans: built-in algorithm 'kmeans'" in err and "(and 2 more: see mlops run --check)" in err


def test_check_shows_the_environment_an_images_file_maps(mixed_definition, tmp_path, capsys):
    images = tmp_path / "images.yaml"
    images.write_text(f'"pytorch-training:2.5*": {{python: "{sys.executable}"}}\n')
    code = main(["run", "--check", str(mixed_definition), "--json", "--images", str(images)])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1
    framework = next(s for s in doc["steps"] if s["name"] == "Framework")
    assert f"interpreter {sys.executable}" in framework["environment"], framework


@pytest.mark.parametrize(
    "text, words",
    [
        ("[1, 2]", "expected a mapping of image patterns"),
        ('"a*": 3.10\n', "write the Python version as a string"),
        ('"a*": {pyhton: "3.10"}\n', "unknown keys ['pyhton']"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_a_bad_images_file_is_one_line_naming_it(mixed_definition, tmp_path, capsys, text, words):
    images = tmp_path / "images.yaml"
    images.write_text(text)
    code = main(["run", "--check", str(mixed_definition), "--images", str(images)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(images) in err and words in err, err


@pytest.mark.parametrize(
    "name, words",
    [
        ("sagemaker_mpi_enabled", "distribution mpi"),
        ("sagemaker_pytorch_ddp_enabled", "distribution pytorchddp"),
        ("sagemaker_distributed_dataparallel_enabled", "distribution smdistributed dataparallel"),
        ("sagemaker_pytorch_xla_multi_worker_enabled", "distribution pytorchxla"),
    ],
)
def test_distributions_that_need_mpirun_and_sshd_are_refused_naming_them(name, words):
    spec = {"TrainingImage": f"{DLC}/pytorch-training:2.5-cpu-py311", "TrainingInputMode": "File"}
    hps = {"sagemaker_program": '"train.py"', name: "true"}
    with pytest.raises(
        ImageLaunchError, match=rf"HyperParameters.{name}: {words} does not run locally"
    ) as err:
        training_launch(spec, hps)
    assert "torch_distributed" in str(err.value)
    hps[name] = "false"
    assert training_launch(spec, hps).kind == "framework"
