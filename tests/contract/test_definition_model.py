"""validate, graph and the local planner read a definition through one model: same verdict, same order."""

from __future__ import annotations

import re

import pytest

from mlops.definition.graph import mermaid
from mlops.definition.model import parse
from mlops.definition.validate import validate_definition
from mlops.errors import DefinitionError
from mlops.local.scheduler import plan


def step(name: str, *, depends_on=None, reads=None, kind="Processing", **extra) -> dict:
    args: dict = {"ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                              "VolumeSizeInGB": 1}},
                  "AppSpecification": {"ImageUri": "python", "ContainerEntrypoint": ["python3", "-c", "pass"]}, "RoleArn": "arn:aws:iam::111111111111:role/r"}  # fmt: skip
    if reads:
        args["Environment"] = {f"IN_{i}": {"Get": f"Steps.{r}.ProcessingJobArn"} for i, r in enumerate(reads)}
    out = {"Name": name, "Type": kind, "Arguments": args, **extra}
    if depends_on:
        out["DependsOn"] = depends_on
    return out


def condition(name: str, if_steps: list, else_steps: list, left: str) -> dict:
    return {
        "Name": name,
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                {
                    "Type": "Equals",
                    "LeftValue": {"Get": f"Steps.{left}.ProcessingJobStatus"},
                    "RightValue": "Completed",
                }
            ],  # fmt: skip
            "IfSteps": if_steps,
            "ElseSteps": else_steps,
        },
    }


def definition(*steps: dict) -> dict:
    return {"Version": "2020-12-01", "Parameters": [], "Steps": list(steps)}


VALID = {
    "chain": definition(step("C", reads=["B"]), step("B", depends_on=["A"]), step("A")),
    "diamond": definition(
        step("D", reads=["B", "C"]), step("B", reads=["A"]), step("C", reads=["A"]), step("A")
    ),
    "independent roots sort by name": definition(step("Zed"), step("Alpha"), step("Mid")),
    "branches": definition(
        step("Prep"), condition("Check", [step("Good", reads=["Prep"])], [step("Bad")], left="Prep")
    ),
    "the same step listed twice": definition(step("A"), step("B", reads=["A"]), step("A")),
}
ORDERS = {
    "chain": ["A", "B", "C"],
    "diamond": ["A", "B", "C", "D"],
    "independent roots sort by name": ["Alpha", "Mid", "Zed"],
    "branches": ["Prep", "Check", "Bad", "Good"],
    "the same step listed twice": ["A", "B"],
}
INVALID = {
    "two-step cycle": (
        definition(step("A", depends_on=["B"]), step("B", depends_on=["A"])),
        "the steps form a cycle: A -> B -> A",
    ),
    "cycle through references": (
        definition(step("A", reads=["C"]), step("B", reads=["A"]), step("C", reads=["B"])),
        "the steps form a cycle: A -> C -> B -> A",  # A reads C, C reads B, B reads A
    ),
    "self reference": (definition(step("A", reads=["A"])), "step 'A': depends on itself"),
    "duplicate names": (
        definition(step("A"), step("A", depends_on=["B"]), step("B")),
        "step 'A': two different steps have this name",
    ),
    "dangling DependsOn": (
        definition(step("A", depends_on=["Ghost"])),
        "DependsOn names unknown step 'Ghost'",
    ),
    "dangling reference": (
        definition(step("A", reads=["Ghost"])),
        "step 'A': reference 'Steps.Ghost.ProcessingJobArn' names unknown step 'Ghost'",
    ),
    "duplicate inside a branch": (
        definition(step("X"), condition("Check", [step("X", depends_on=["Check"])], [], left="X")),
        "step 'X': two different steps have this name",
    ),
    "no Steps list": ({"Steps": {}}, "not a pipeline definition"),
}


def _graph_order(definition: dict) -> list[str]:
    return [m.group(1) for m in re.finditer(r'^    (\w+)[\[\(\{/]+"', mermaid(definition), re.M)]


@pytest.mark.parametrize("case", sorted(VALID))
def test_valid_definitions_get_one_order_everywhere(case):
    d = VALID[case]
    assert parse(d).order == ORDERS[case]
    assert plan(d).order == ORDERS[case]
    assert _graph_order(d) == ORDERS[case]
    assert not [f for f in validate_definition(d) if "cycle" in str(f) or "unknown step" in str(f)]


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_definitions_get_one_verdict_everywhere(case):
    d, message = INVALID[case]
    with pytest.raises(DefinitionError) as planned:
        plan(d)
    findings = [str(f) for f in validate_definition(d)]
    assert message in str(planned.value)
    assert findings == [str(planned.value)]  # validate reports exactly what the planner refuses
    with pytest.raises(DefinitionError) as graphed:
        mermaid(d)
    assert str(graphed.value) == str(planned.value)


def test_the_compiled_pipelines_order_the_same_way(compiled_local):
    for key in compiled_local.definitions:
        d = compiled_local.definition(key)
        assert plan(d).order == parse(d).order == _graph_order(d)
        assert validate_definition(d) == []
