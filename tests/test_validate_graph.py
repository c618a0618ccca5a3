"""Definition checks (DAG, references, botocore) and the graph, on hand-made and compiled definitions."""

from __future__ import annotations

import copy
import shutil

import pytest

from mlops.cli.main import main
from mlops.definition.graph import dot, mermaid, render_picture
from mlops.definition.validate import validate_definition, validate_request
from mlops.errors import DefinitionError


def processing(name, depends_on=(), uri="s3://bucket/in/"):
    return {
        "Name": name,
        "Type": "Processing",
        "DependsOn": list(depends_on) or None,
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30}
            },
            "AppSpecification": {"ImageUri": "image", "ContainerEntrypoint": ["python3", "-c", "pass"]},
            "RoleArn": "arn:aws:iam::123456789012:role/example",
            "ProcessingInputs": [
                {
                    "InputName": "in",
                    "S3Input": {
                        "S3Uri": uri,
                        "LocalPath": "/opt/ml/processing/input",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": "out",
                        "S3Output": {
                            "S3Uri": "s3://bucket/out/",
                            "LocalPath": "/opt/ml/processing/output",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                ]
            },
        },
    }


def definition(*steps, params=()):
    clean = []
    for s in steps:
        s = copy.deepcopy(s)
        if s.get("DependsOn") is None:
            s.pop("DependsOn", None)
        clean.append(s)
    return {"Version": "2020-12-01", "Parameters": list(params), "Steps": clean}


def test_valid_hand_written_definition():
    b = processing("B", uri={"Get": "Steps.A.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"})
    assert validate_definition(definition(processing("A"), b)) == []


BAD = [
    (
        "cycle",
        definition(processing("A", ["B"]), processing("B", ["A"])),
        "the steps form a cycle: A -> B -> A",
    ),
    (
        "unknown DependsOn",
        definition(processing("A", ["Nope"])),
        "step 'A': DependsOn names unknown step 'Nope'",
    ),
    (
        "unknown step reference",
        definition(processing("A", uri={"Get": "Steps.Ghost.ProcessingOutputConfig"})),
        "step 'A': reference 'Steps.Ghost.ProcessingOutputConfig' names unknown step 'Ghost'",
    ),
    (
        "bad property path",
        definition(
            processing("A"), processing("B", uri={"Get": "Steps.A.ProcessingOutputConfig.Outputz['out']"})
        ),
        "B: reference \"Steps.A.ProcessingOutputConfig.Outputz['out']\": 'Outputz' is not a property here",
    ),
    (
        "unknown parameter",
        definition(processing("A", uri={"Get": "Parameters.Missing"})),
        "A: reference 'Parameters.Missing': no parameter 'Missing'",
    ),
    (
        "unused parameter",
        definition(processing("A"), params=[{"Name": "Unused", "Type": "String", "DefaultValue": "x"}]),
        "parameter 'Unused' is declared but never used",
    ),
]


@pytest.mark.parametrize("case,defn,message", BAD, ids=[c for c, _, _ in BAD])
def test_bad_definitions_are_reported(case, defn, message):
    assert message in [str(f) for f in validate_definition(defn)]


def test_botocore_catches_bad_request_fields():
    step = processing("A")
    step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = "two"
    step["Arguments"]["Bogus"] = 1
    found = [str(f) for f in validate_definition(definition(step))]
    assert any(
        "Invalid type for parameter ProcessingResources.ClusterConfig.InstanceCount" in f for f in found
    )
    assert any('Unknown parameter in input: "Bogus"' in f for f in found)


def test_expressions_become_typed_placeholders():
    # an expression where botocore wants an integer must not be reported as a type error
    step = processing("A")
    step["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceCount"] = {"Get": "Parameters.N"}
    defn = definition(step, params=[{"Name": "N", "Type": "Integer", "DefaultValue": 1}])
    assert validate_definition(defn) == []
    assert validate_request("CreateModelPackage", {"ModelPackageGroupName": {"Get": "Parameters.G"}}) == []


def test_mermaid_and_dot_of_the_compiled_pipeline(compiled_local, tmp_path):
    d = compiled_local.definition("model-build")
    text = mermaid(d)
    assert text.startswith("flowchart TD\n")
    assert "CheckMetric -->|true| RegisterModel" in text
    assert "CheckMetric -->|false| MetricBelowThreshold" in text
    assert "ValidateData --> Train" in text
    assert "digraph pipeline" in dot(d)
    if shutil.which("dot"):
        picture = render_picture(d, tmp_path / "g.svg")
        assert picture.read_text().lstrip().startswith("<?xml")


def test_graph_cycle_is_an_error():
    with pytest.raises(DefinitionError, match="cycle"):
        mermaid(definition(processing("A", ["B"]), processing("B", ["A"])))


@pytest.mark.slow
def test_cli_validate_and_graph(tmp_path, capsys):
    assert main(["validate", "--env", "local"]) == 0
    assert "ok model-build" in capsys.readouterr().out
    assert main(["graph", "--env", "local", "--out", str(tmp_path / "g.svg")]) == 0
    out = capsys.readouterr().out
    assert "flowchart TD" in out and (tmp_path / "g.mmd").is_file()


@pytest.mark.parametrize(
    "queue, ok",
    [
        ("https://sqs.eu-west-1.amazonaws.com/123456789012/digits-prod-promotion", True),
        ("https://sqs.us-gov-west-1.amazonaws.com/123456789012/q.fifo", True),
        ("https://sqs.eu-west-1.amazonaws.com/digits-prod-promotion", False),  # no account
        ("arn:aws:sqs:eu-west-1:123456789012:q", False),  # an ARN, not the URL
    ],
)
def test_a_callback_step_needs_an_sqs_queue_url(queue, ok):
    callback = {
        "Name": "Gate", "Type": "Callback", "SqsQueueUrl": queue, "Arguments": {"x": "y"},
        "OutputParameters": [{"OutputName": "who", "OutputType": "String"}],
    }  # fmt: skip
    findings = validate_definition({"Version": "2020-12-01", "Parameters": [], "Steps": [callback]})
    assert [f.message for f in findings] == ([] if ok else [f"SqsQueueUrl {queue!r} is not an SQS queue URL"])
