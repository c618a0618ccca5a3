"""Bad definitions are refused before anything runs: one line naming the step and the field, from
``mlops.definition.preflight`` through the local planner, ``validate_definition`` and ``mlops run``."""

from __future__ import annotations

import copy
import json

import pytest

from mlops.cli.main import main
from mlops.definition.preflight import check, problems
from mlops.definition.validate import validate_definition
from mlops.errors import DefinitionError
from mlops.local.scheduler import plan
from tests.contract.test_definition_model import condition, definition, step

BASE = definition(
    step("Prep", CacheConfig={"Enabled": True, "ExpireAfter": "P30D"}),
    condition("Check", [step("Good", reads=["Prep"])], [step("Bad")], left="Prep"),
)
TRAINING = {
    "Name": "Train",
    "Type": "Training",
    "Arguments": {
        "AlgorithmSpecification": {"TrainingImage": "img:1", "TrainingInputMode": "File"},
        "OutputDataConfig": {"S3OutputPath": "s3://b/o"},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1},
        "RoleArn": "arn:aws:iam::111111111111:role/r",
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
    },
}


def _with(change):
    doc = copy.deepcopy(BASE)
    doc["Steps"].append(copy.deepcopy(TRAINING))
    change(doc)
    return doc


def _cond(doc):
    return doc["Steps"][1]["Arguments"]["Conditions"]


CASES = {
    "Parameters as an object": (
        lambda d: d.__setitem__("Parameters", {"A": {"Type": "String"}}),
        "Parameters must be a list of objects, each with a Name",
    ),
    "a Condition without LeftValue": (
        lambda d: _cond(d)[0].pop("LeftValue"),
        "step Check: Arguments.Conditions[0]: Equals condition needs LeftValue",
    ),
    "a condition that is not an object": (
        lambda d: _cond(d).__setitem__(0, 5),
        "step Check: Arguments.Conditions[0]: a condition must be an object with a Type, got a number",
    ),
    "an operand that is an object but no expression": (
        lambda d: _cond(d)[0].__setitem__("RightValue", {"a": 1}),
        "step Check: Arguments.Conditions[0].RightValue: must be a value or an expression",
    ),
    "a 60 MB Environment value in a processing job": (
        lambda d: d["Steps"][0]["Arguments"].__setitem__("Environment", {"BIG": "x" * 60_000_000}),
        "step Prep: Arguments.Environment.BIG: is 60000000 characters long; "
        "SageMaker's CreateProcessingJob allows at most 256",
    ),
    "a training Environment value over 512": (
        lambda d: d["Steps"][2]["Arguments"].__setitem__("Environment", {"V": "x" * 513}),
        "step Train: Arguments.Environment.V: is 513 characters long; SageMaker's CreateTrainingJob allows at most 512",
    ),
    "101 Environment entries": (
        lambda d: d["Steps"][0]["Arguments"].__setitem__("Environment", {f"K{i}": "v" for i in range(101)}),
        "step Prep: Arguments.Environment: has 101 entries; SageMaker's CreateProcessingJob allows at most 100",
    ),
    "a non-string CacheConfig.ExpireAfter": (
        lambda d: d["Steps"][0]["CacheConfig"].__setitem__("ExpireAfter", 30),
        "step Prep: CacheConfig.ExpireAfter: must be a duration string like P30D, got a number",
    ),
    "a numeric InferenceSpecification in RegisterModel": (
        lambda d: d["Steps"].append(
            {
                "Name": "Reg",
                "Type": "RegisterModel",
                "Arguments": {"ModelPackageGroupName": "g", "InferenceSpecification": 7},
            }
        ),
        "step Reg: Arguments.InferenceSpecification: must be an object (InferenceSpecification), got a number",
    ),
    "a Get that is not a path": (
        lambda d: d["Steps"][0]["Arguments"].__setitem__("Environment", {"X": {"Get": 5}}),
        "step Prep: Arguments.Environment.X: Get expects a path Parameters.*, Execution.* or Steps.*, got 5",
    ),
    "nesting 100,000 levels deep": (
        lambda d: d["Steps"][0]["Arguments"].__setitem__("Environment", _deep(100_000)),
        "step 'Prep': Arguments.Environment is nested more than 100 levels deep",
    ),
}


def _deep(levels):
    value: object = "x"
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_anything_runs_with_step_and_field(case):
    change, message = CASES[case]
    doc = _with(change)
    with pytest.raises(DefinitionError) as err:
        plan(doc)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    findings = [str(f) for f in validate_definition(doc)]
    assert any(message.split(": ", 1)[-1].split(": ")[-1] in f for f in findings), findings


def test_the_shipped_shapes_pass(compiled_local, compiled_prod):
    assert problems(_with(lambda d: None)) == []
    for compiled in (compiled_local, compiled_prod):
        for key in compiled.definitions:
            check(compiled.definition(key))


def test_mlops_run_refuses_deep_json_and_bad_conditions_with_one_line(tmp_path, capsys):
    deep = tmp_path / "deep.json"
    deep.write_text(
        '{"Steps": [{"Name": "A", "Type": "Fail", "Arguments": {"ErrorMessage": '
        + "[" * 100_000
        + "]" * 100_000
        + "}}]}"
    )
    assert main(["run", "--definition", str(deep), "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {deep}: nested too deeply") and "\n" not in err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(_with(lambda d: _cond(d)[0].pop("LeftValue"))))
    assert main(["run", "--definition", str(bad), "--home", str(tmp_path / "home")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == "error: step Check: Arguments.Conditions[0]: Equals condition needs LeftValue"
    )
    assert not (tmp_path / "home" / "s3").exists() or not any((tmp_path / "home" / "s3").rglob("*"))
