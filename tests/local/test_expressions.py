"""The definition-JSON expression language: parameters, Get, Std:Join, Std:JsonGet and conditions."""

import pytest

from mlops.definition.expressions import Context, evaluate, parse_path, references, resolve
from mlops.definition.parameters import parameter_values, parse_assignments
from mlops.errors import DefinitionError, ParameterError

DEFINITION = {
    "Parameters": [
        {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.9},
        {"Name": "Epochs", "Type": "Integer", "DefaultValue": 3},
        {"Name": "Region", "Type": "String", "DefaultValue": "eu"},
        {"Name": "Deploy", "Type": "Boolean", "DefaultValue": False},
    ]
}

PROPS = {
    "Preprocess": {
        "ProcessingOutputConfig": {
            "Outputs": [
                {"OutputName": "train", "S3Output": {"S3Uri": "s3://b/pre/train"}},
                {"OutputName": "test", "S3Output": {"S3Uri": "s3://b/pre/test"}},
            ]
        },
        "PropertyFiles": {"Report": "s3://b/eval/evaluation.json"},
    },
    "Train": {
        "ModelArtifacts": {"S3ModelArtifacts": "s3://b/train/model.tar.gz"},
        "FinalMetricDataList": [
            {"MetricName": "train:loss", "Value": 0.3},
            {"MetricName": "validation:accuracy", "Value": 0.93},
        ],
    },
}

DOCS = {"s3://b/eval/evaluation.json": {"metrics": {"accuracy": {"value": 0.95}}, "classes": [3, 7]}}


def ctx(**params) -> Context:
    values = parameter_values(DEFINITION, params)
    execution = {"PipelineExecutionId": "abc123", "PipelineName": "demo"}
    return Context(values, execution, PROPS, read_json=DOCS.__getitem__)


def test_defaults_and_typed_overrides():
    assert parameter_values(DEFINITION, {}) == {
        "Threshold": 0.9,
        "Epochs": 3,
        "Region": "eu",
        "Deploy": False,
    }
    got = parameter_values(DEFINITION, {"Threshold": "0.5", "Epochs": "10", "Deploy": "TRUE", "Region": "us"})
    assert got == {"Threshold": 0.5, "Epochs": 10, "Region": "us", "Deploy": True}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"Epochs": "ten"}, "parameter Epochs is Integer: expected a whole number, got 'ten'"),
        ({"Epochs": "1.5"}, "parameter Epochs is Integer"),
        ({"Threshold": "high"}, "parameter Threshold is Float: expected a number, got 'high'"),
        ({"Deploy": "yes"}, "parameter Deploy is Boolean: expected true or false, got 'yes'"),
        (
            {"Nope": "1"},
            "unknown parameter Nope (the definition declares: Deploy, Epochs, Region, Threshold)",
        ),
    ],
)
def test_bad_parameters_are_one_line_errors(overrides, message):
    with pytest.raises(ParameterError) as err:
        parameter_values(DEFINITION, overrides)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_parameter_without_default_must_be_given():
    definition = {"Parameters": [{"Name": "Input", "Type": "String"}]}
    with pytest.raises(ParameterError, match="Input .String. has no default"):
        parameter_values(definition, {})
    assert parameter_values(definition, {"Input": "s3://x"}) == {"Input": "s3://x"}


@pytest.mark.parametrize("pairs", [["novalue"], ["=3"]])
def test_param_assignments_need_name_and_value(pairs):
    with pytest.raises(ParameterError, match="NAME=VALUE"):
        parse_assignments(pairs)


def test_param_assignment_keeps_equals_in_value():
    assert parse_assignments(["Q=a=b", "E=7"]) == {"Q": "a=b", "E": "7"}


@pytest.mark.parametrize(
    "expr, expected",
    [
        ({"Get": "Parameters.Epochs"}, 3),
        ({"Get": "Execution.PipelineExecutionId"}, "abc123"),
        (
            {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri"},
            "s3://b/pre/train",
        ),
        ({"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs[1].S3Output.S3Uri"}, "s3://b/pre/test"),
        ({"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}, "s3://b/train/model.tar.gz"),
        ({"Get": "Steps.Train.FinalMetricDataList['validation:accuracy'].Value"}, 0.93),
        (
            {
                "Std:Join": {
                    "On": "/",
                    "Values": ["s3://b", {"Get": "Execution.PipelineName"}, {"Get": "Parameters.Epochs"}],
                }
            },
            "s3://b/demo/3",
        ),
        (
            {
                "Std:JsonGet": {
                    "PropertyFile": {"Get": "Steps.Preprocess.PropertyFiles.Report"},
                    "Path": "metrics.accuracy.value",
                }
            },
            0.95,
        ),
        ({"Std:JsonGet": {"S3Uri": "s3://b/eval/evaluation.json", "Path": "classes[1]"}}, 7),
        (
            {"Std:JsonGet": {"S3Uri": "s3://b/eval/evaluation.json", "Path": "$.metrics['accuracy'].value"}},
            0.95,
        ),
    ],
)
def test_expressions(expr, expected):
    assert resolve(expr, ctx()) == expected


def test_resolve_walks_nested_arguments():
    args = {"A": [{"Get": "Parameters.Region"}, "plain"], "B": {"C": {"Get": "Parameters.Deploy"}}}
    assert resolve(args, ctx(Deploy="true")) == {"A": ["eu", "plain"], "B": {"C": True}}


def test_join_renders_booleans_as_sagemaker_does():
    assert (
        resolve({"Std:Join": {"On": "-", "Values": [{"Get": "Parameters.Deploy"}, 1.5]}}, ctx())
        == "false-1.5"
    )


@pytest.mark.parametrize(
    "expr, message",
    [
        ({"Get": "Parameters.Missing"}, "declares no parameter 'Missing'"),
        ({"Get": "Execution.Nope"}, "unknown execution variable 'Nope'"),
        ({"Get": "Steps.Ghost.Outcome"}, "step 'Ghost' has no recorded properties"),
        (
            {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['val'].S3Output.S3Uri"},
            "no entry named 'val'",
        ),
        ({"Get": "Steps.Train.Nope"}, "no property 'Nope'"),
        ({"Get": "Other.X"}, "expected Parameters.*, Execution.* or Steps.*"),
        ({"Std:JsonGet": {"S3Uri": "s3://b/eval/evaluation.json", "Path": "metrics.f1"}}, "no property 'f1'"),
        ({"Std:Join": {"On": ","}}, "Std:Join expects"),
    ],
)
def test_bad_expressions_name_the_problem(expr, message):
    with pytest.raises(
        DefinitionError, match=message.replace("(", r"\(").replace("*", r"\*").replace("[", r"\[")
    ):
        resolve(expr, ctx())


def test_references_find_data_dependencies():
    args = {
        "X": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"},
        "Y": [{"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.R"}, "Path": "a"}}],
        "Z": {"Get": "Parameters.Epochs"},
    }
    assert references(args) == {"Train", "Evaluate"}


def test_parse_path_tokens():
    assert parse_path("Outputs['a:b'].S3Output[0]") == ["Outputs", "a:b", "S3Output", 0]
    with pytest.raises(DefinitionError, match="cannot parse property path"):
        parse_path("Outputs[")


ACC = {
    "Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.Preprocess.PropertyFiles.Report"},
        "Path": "metrics.accuracy.value",
    }
}


@pytest.mark.parametrize(
    "condition, expected",
    [
        (
            {"Type": "GreaterThanOrEqualTo", "LeftValue": ACC, "RightValue": {"Get": "Parameters.Threshold"}},
            True,
        ),
        ({"Type": "GreaterThan", "LeftValue": ACC, "RightValue": 0.95}, False),
        ({"Type": "LessThan", "LeftValue": {"Get": "Parameters.Epochs"}, "RightValue": 4}, True),
        ({"Type": "LessThanOrEqualTo", "LeftValue": 5, "RightValue": {"Get": "Parameters.Epochs"}}, False),
        ({"Type": "Equals", "LeftValue": {"Get": "Parameters.Region"}, "RightValue": "eu"}, True),
        ({"Type": "Equals", "LeftValue": {"Get": "Parameters.Deploy"}, "RightValue": False}, True),
        ({"Type": "Equals", "LeftValue": "0.95", "RightValue": ACC}, True),
        ({"Type": "In", "QueryValue": {"Get": "Parameters.Region"}, "Values": ["us", "eu"]}, True),
        ({"Type": "In", "QueryValue": 3, "Values": [1, 2]}, False),
        ({"Type": "Not", "Condition": {"Type": "Equals", "LeftValue": 1, "RightValue": 1}}, False),
        (
            {
                "Type": "Or",
                "Conditions": [
                    {"Type": "Equals", "LeftValue": 1, "RightValue": 2},
                    {"Type": "GreaterThan", "LeftValue": {"Get": "Parameters.Epochs"}, "RightValue": 2},
                ],
            },
            True,
        ),
    ],
)
def test_conditions(condition, expected):
    assert evaluate(condition, ctx()) is expected


@pytest.mark.parametrize(
    "condition, message",
    [
        ({"Type": "And", "Conditions": []}, "unsupported condition 'And'"),
        ({"Type": "GreaterThan", "LeftValue": "abc", "RightValue": 3}, "cannot compare"),
    ],
)
def test_bad_conditions(condition, message):
    with pytest.raises(DefinitionError, match=message):
        evaluate(condition, ctx())


def test_symbolic_execution_keeps_variables_for_cache_keys():
    c = ctx()
    c.symbolic_execution = True
    expr = {"Std:Join": {"On": "/", "Values": ["s3://b", {"Get": "Execution.PipelineExecutionId"}]}}
    assert resolve(expr, c) == "s3://b/{Execution.PipelineExecutionId}"
