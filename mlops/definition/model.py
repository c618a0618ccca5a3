"""One model of a pipeline definition JSON, parsed once: steps (condition branches flattened), their
dependencies (``DependsOn``, property references, branch membership) and a topological order.

validate, graph, diff and the local scheduler all read the definition through ``parse``, so they agree on
what is a step, what depends on what, which names clash and where a cycle runs.
"""

from __future__ import annotations

import graphlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops.errors import DefinitionError

STEP_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,256}$")
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
BRANCHES = (("IfSteps", True), ("ElseSteps", False))
# Deeper than any definition the SDK writes (about 15 levels) and shallow enough that every recursive
# reader (expressions, JSON encoding, comparisons) stays far from Python's recursion limit.
MAX_DEPTH = 100


@dataclass
class Step:
    name: str
    type: str
    spec: dict[str, Any]  # the step's JSON object as it appears in the definition
    branch: tuple[str, bool] | None = None  # (condition step, True for IfSteps) when inside a branch
    deps: set[str] = field(default_factory=set)

    @property
    def parent(self) -> str | None:
        return self.branch[0] if self.branch else None

    @property
    def arguments(self) -> dict[str, Any]:
        args = self.spec.get("Arguments")
        return args if isinstance(args, dict) else {}

    def own_values(self) -> dict[str, Any]:
        """The step's own fields, without the nested branch steps of a Condition."""
        raw = dict(self.spec)
        if self.type == "Condition":
            raw["Arguments"] = {k: v for k, v in self.arguments.items() if k not in ("IfSteps", "ElseSteps")}
        return raw


@dataclass
class Definition:
    raw: Mapping[str, Any]
    steps: dict[str, Step]  # in topological order
    parameters: list[dict[str, Any]]

    @property
    def order(self) -> list[str]:
        return list(self.steps)

    def children(self, condition: str, taken: bool) -> list[str]:
        return [s.name for s in self.steps.values() if s.branch == (condition, taken)]


def iter_gets(value: Any) -> Iterator[str]:
    """Every ``Get`` path inside a value (arguments, conditions, messages)."""
    if isinstance(value, Mapping):
        if isinstance(value.get("Get"), str):
            yield value["Get"]
        for v in value.values():
            yield from iter_gets(v)
    elif isinstance(value, list):
        for v in value:
            yield from iter_gets(v)


def check_depth(definition: Mapping[str, Any], limit: int = MAX_DEPTH) -> None:
    """Refuse a definition nested deeper than ``limit`` (walked without recursion, so any depth is safe)."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(definition, 0, ())]
    while stack:
        node, depth, path = stack.pop()
        if depth > limit:
            top = path[0] if path else ""
            if top == "Steps" and len(path) > 1:
                spec = definition["Steps"][path[1]]
                name = spec.get("Name") if isinstance(spec, Mapping) else None
                where = f"step {str(name)[:80]!r}" if isinstance(name, str) else f"Steps[{path[1]}]"
                field_name = ".".join(str(p) for p in path[2:4] if isinstance(p, str))[:80]
                where += f": {field_name}" if field_name else ""
            else:
                where = str(top)[:80] or "the definition"
            raise DefinitionError(f"{where} is nested more than {limit} levels deep")
        if isinstance(node, Mapping):
            items = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            continue
        for key, value in items:
            if isinstance(value, Mapping | list):
                stack.append((value, depth + 1, path + (key,) if len(path) < 4 else path))
    return None


def parse(definition: Any) -> Definition:
    """Flatten, link and order the steps; a DefinitionError names the step before anything runs.

    Rules: every step is an object with a valid Name and a Type; a name appears once (the same object
    listed twice counts once, two different steps with one name are refused); every DependsOn and property
    reference names a known step; no step depends on itself; no cycle (the error shows its path).
    """
    if not isinstance(definition, Mapping) or not isinstance(definition.get("Steps"), list):
        raise DefinitionError("not a pipeline definition: expected a JSON object with a Steps list")
    check_depth(definition)
    params = definition.get("Parameters") or []
    if not isinstance(params, list):
        raise DefinitionError("Parameters must be a list of objects, each with a Name")
    steps: dict[str, Step] = {}

    def add(spec: Any, branch: tuple[str, bool] | None) -> None:
        if not isinstance(spec, Mapping):
            raise DefinitionError(f"a step must be a JSON object, got {str(spec)[:60]!r}")
        name, kind = spec.get("Name"), spec.get("Type")
        if not isinstance(name, str) or not STEP_NAME.match(name):
            raise DefinitionError(f"invalid step Name {str(name)[:80]!r} (letters, digits, - and _)")
        if not isinstance(kind, str) or not kind:
            raise DefinitionError(f"step {name!r}: every step needs a Type (a non-empty string)")
        if name in steps:
            if steps[name].spec == spec:
                return
            raise DefinitionError(f"step {name!r}: two different steps have this name")
        steps[name] = Step(name, kind, dict(spec), branch)
        if kind == "Condition":
            args = spec.get("Arguments") or {}
            if not isinstance(args, Mapping):
                raise DefinitionError(f"step {name!r}: Arguments must be an object")
            for key, taken in BRANCHES:
                children = args.get(key) or []
                if not isinstance(children, list):
                    raise DefinitionError(f"step {name!r}: {key} must be a list of steps")
                for child in children:
                    add(child, (name, taken))

    for spec in definition["Steps"]:
        add(spec, None)

    for step in steps.values():
        depends_on = step.spec.get("DependsOn") or []
        if not isinstance(depends_on, list) or not all(isinstance(d, str) for d in depends_on):
            raise DefinitionError(f"step {step.name!r}: DependsOn must be a list of step names")
        for dep in depends_on:
            if dep not in steps:
                raise DefinitionError(f"step {step.name!r}: DependsOn names unknown step {dep[:80]!r}")
            step.deps.add(dep)
        # every field of the step, not only Arguments: a ClarifyCheck's ModelName or a check step's
        # SuppliedBaselineConstraints may be another step's property, and that makes an edge on SageMaker too
        values = step.own_values()
        fields = [v for k, v in values.items() if k not in ("Name", "Type", "DependsOn")]
        for path in sorted(set(iter_gets(fields))):
            m = STEP_REF.match(path)
            if not m:
                continue
            if m.group(1) not in steps:
                raise DefinitionError(
                    f"step {step.name!r}: reference {path[:120]!r} names unknown step {m.group(1)[:80]!r}"
                )
            step.deps.add(m.group(1))
        if step.branch:
            step.deps.add(step.branch[0])
        if step.name in step.deps:
            raise DefinitionError(f"step {step.name!r}: depends on itself")
    order = _order(steps)
    return Definition(definition, {n: steps[n] for n in order}, list(params))


def _order(steps: dict[str, Step]) -> list[str]:
    """graphlib's order, each ready set sorted by name so the order never depends on the JSON's layout."""
    sorter = graphlib.TopologicalSorter({name: sorted(step.deps) for name, step in steps.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        ring = list(reversed(err.args[1]))[:-1]  # each step depends on the next
        start = ring.index(min(ring))
        cycle = ring[start:] + ring[:start] + [min(ring)]
        raise DefinitionError(f"the steps form a cycle: {' -> '.join(cycle)}") from None
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    return order
