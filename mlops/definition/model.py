"""Read a pipeline definition JSON: flatten steps, find references, derive the DAG. No SDK needed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from mlops.errors import DefinitionError

EXPRESSION_KEYS = ("Get", "Std:Join", "Std:JsonGet")
STEP_REF = re.compile(r"^Steps\.([^.\[]+)(.*)$")
EXECUTION_VARIABLES = {
    "PipelineExecutionId",
    "PipelineExecutionArn",
    "PipelineName",
    "PipelineArn",
    "StartDateTime",
    "CurrentDateTime",
    "PipelineExecutionStartTime",
}


@dataclass
class StepInfo:
    name: str
    type: str
    raw: dict
    parent: str | None = None  # the Condition step whose branch holds this step
    depends_on: set[str] = field(default_factory=set)


def is_expression(value) -> bool:
    return isinstance(value, dict) and len(value) == 1 and next(iter(value)) in EXPRESSION_KEYS


def iter_gets(value) -> Iterator[str]:
    """Every ``Get`` path inside a value (arguments, conditions, messages)."""
    if isinstance(value, dict):
        if "Get" in value and isinstance(value["Get"], str):
            yield value["Get"]
        for v in value.values():
            yield from iter_gets(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_gets(v)


def flatten(definition: dict) -> dict[str, StepInfo]:
    """All steps, including those nested in Condition branches; names must be unique."""
    steps: dict[str, StepInfo] = {}

    def visit(raw: dict, parent: str | None):
        name = raw.get("Name")
        if not name or "Type" not in raw:
            raise DefinitionError(f"step {raw.get('Name', '?')!r}: every step needs a Name and a Type")
        if name in steps:
            raise DefinitionError(f"step {name!r}: duplicate step name")
        steps[name] = StepInfo(name, raw["Type"], raw, parent)
        if raw["Type"] == "Condition":
            args = raw.get("Arguments", {})
            for branch in ("IfSteps", "ElseSteps"):
                for child in args.get(branch, []):
                    visit(child, name)

    for raw in definition.get("Steps", []):
        visit(raw, None)
    return steps


def own_values(info: StepInfo) -> dict:
    """A step's own fields, without the nested branch steps of a Condition."""
    raw = dict(info.raw)
    if info.type == "Condition":
        args = {k: v for k, v in raw.get("Arguments", {}).items() if k not in ("IfSteps", "ElseSteps")}
        raw["Arguments"] = args
    return raw


def dependencies(definition: dict) -> dict[str, StepInfo]:
    """Steps with their upstream step names (DependsOn, property references, branch membership)."""
    steps = flatten(definition)
    for info in steps.values():
        for dep in info.raw.get("DependsOn", []) or []:
            if dep not in steps:
                raise DefinitionError(f"step {info.name!r}: DependsOn names unknown step {dep!r}")
            info.depends_on.add(dep)
        for path in iter_gets(own_values(info)):
            m = STEP_REF.match(path)
            if m:
                if m.group(1) not in steps:
                    raise DefinitionError(
                        f"step {info.name!r}: reference {path!r} names unknown step {m.group(1)!r}"
                    )
                info.depends_on.add(m.group(1))
        if info.parent:
            info.depends_on.add(info.parent)
    info_self = [i.name for i in steps.values() if i.name in i.depends_on]
    if info_self:
        raise DefinitionError(f"step {info_self[0]!r}: depends on itself")
    return steps


def topological_order(steps: dict[str, StepInfo]) -> list[str]:
    """Kahn's algorithm; a cycle is an error naming the steps on it."""
    indegree = {n: len(i.depends_on) for n, i in steps.items()}
    children: dict[str, list[str]] = {n: [] for n in steps}
    for n, i in steps.items():
        for d in i.depends_on:
            children[d].append(n)
    ready = sorted(n for n, d in indegree.items() if d == 0)
    order = []
    while ready:
        n = ready.pop(0)
        order.append(n)
        for c in sorted(children[n]):
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) != len(steps):
        cyclic = sorted(set(steps) - set(order))
        raise DefinitionError(f"the pipeline has a cycle through steps: {', '.join(cyclic)}")
    return order
