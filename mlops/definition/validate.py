"""Static checks of a compiled definition: DAG, parameters, references, and botocore request validation.

Job steps' ``Arguments`` are the Create* requests SageMaker will send; pipeline expressions inside them are
replaced by placeholders of the type botocore's service model expects, then botocore's own parameter
validator checks names, types, required members, enums-by-type and lengths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mlops.botocore_check import problems, service_model
from mlops.definition.expressions import is_expression
from mlops.definition.model import EXECUTION_VARIABLES, STEP_REF, Step, iter_gets, parse
from mlops.definition.preflight import CHECK_REQUESTS, OPERATIONS
from mlops.definition.preflight import problems as preflight_problems
from mlops.errors import DefinitionError

NO_REQUEST = {"Condition", "Fail"}
# A Callback's Arguments are the message its consumer reads, not an API request: only its queue is checked.
SQS_QUEUE_URL = re.compile(
    r"^https://sqs\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com(\.cn)?/\d{12}/[A-Za-z0-9_-]{1,80}(\.fifo)?$"
)
# A check step's properties are S3 URIs (QualityCheckStepMetadata), not a Describe* call's output
CHECK_PROPERTIES = {
    "QualityCheck": (
        "CalculatedBaselineStatistics", "CalculatedBaselineConstraints",
        "BaselineUsedForDriftCheckStatistics", "BaselineUsedForDriftCheckConstraints",
    ),
}  # fmt: skip
INDEX = re.compile(r"\[(?:'([^']*)'|(\d+))\]")


@dataclass
class Finding:
    step: str
    message: str

    def __str__(self) -> str:
        return f"{self.step}: {self.message}" if self.step else self.message


def _service_model():
    return service_model("sagemaker")


def _placeholder(shape):
    kind = shape.type_name
    if kind == "string":
        enum = shape.enum
        return enum[0] if enum else "x" * max(1, shape.metadata.get("min", 1))
    if kind in ("integer", "long"):
        return max(0, shape.metadata.get("min", 0))
    if kind in ("float", "double"):
        return float(shape.metadata.get("min", 0))
    if kind == "boolean":
        return False
    if kind == "timestamp":
        return "2020-01-01T00:00:00Z"
    if kind == "list":
        return [_placeholder(shape.member)]
    if kind == "map":
        return {}
    if kind == "structure":
        return {}
    return "x"


def _substitute(value, shape):
    """Replace pipeline expressions with typed placeholders, guided by the botocore shape."""
    if is_expression(value):
        return _placeholder(shape) if shape is not None else "x"
    if shape is None:
        return value
    if isinstance(value, dict) and shape.type_name == "structure":
        return {k: _substitute(v, shape.members.get(k)) for k, v in value.items()}
    if isinstance(value, dict) and shape.type_name == "map":
        return {k: _substitute(v, shape.value) for k, v in value.items()}
    if isinstance(value, list) and shape.type_name == "list":
        return [_substitute(v, shape.member) for v in value]
    return value


def validate_request(operation: str, request: dict, name_member: str | None = None) -> list[str]:
    """botocore's own validation of one request; returns readable problems (empty when valid)."""
    model = _service_model().operation_model(operation)
    params = _substitute(dict(request), model.input_shape)
    if name_member and name_member not in params:
        params[name_member] = "pipeline-supplied-name"
    return problems("sagemaker", operation, params)


def _walk_property(path: str, shape) -> str | None:
    """Check a property path like ``.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri``."""
    rest = path
    while rest:
        if rest.startswith("."):
            m = re.match(r"\.([A-Za-z0-9_]+)", rest)
            if not m:
                return f"cannot parse {rest!r}"
            if shape.type_name != "structure" or m.group(1) not in shape.members:
                return f"{m.group(1)!r} is not a property here"
            shape = shape.members[m.group(1)]
            rest = rest[m.end() :]
        elif rest.startswith("["):
            m = INDEX.match(rest)
            if not m or shape.type_name not in ("list", "map"):
                return f"cannot index {rest!r}"
            shape = shape.member if shape.type_name == "list" else shape.value
            rest = rest[m.end() :]
        else:
            return f"cannot parse {rest!r}"
    return None


def _check_reference(path: str, info: Step, steps: dict[str, Step], params: set[str]) -> str | None:
    if path.startswith("Parameters."):
        name = path.split(".", 1)[1]
        return None if name in params else f"reference {path!r}: no parameter {name!r}"
    if path.startswith("Execution."):
        name = path.split(".", 1)[1]
        return None if name in EXECUTION_VARIABLES else f"reference {path!r}: unknown execution variable"
    m = STEP_REF.match(path)
    if not m:
        return f"reference {path!r}: must start with Parameters., Execution. or Steps."
    if m.group(1) not in steps:  # outside Arguments/PropertyFiles, which parse has checked already
        return f"reference {path!r} names unknown step {m.group(1)!r}"
    target, rest = steps[m.group(1)], m.group(2)
    if rest.startswith(".PropertyFiles."):
        declared = {p.get("PropertyFileName") for p in (target.spec.get("PropertyFiles") or [])}
        name = rest.split(".", 2)[2]
        return (
            None
            if name in declared
            else f"reference {path!r}: step {target.name!r} declares no property file {name!r}"
        )
    if target.type == "Condition":
        return None if rest == ".Outcome" else f"reference {path!r}: a Condition step only has Outcome"
    if target.type in CHECK_PROPERTIES:
        known = CHECK_PROPERTIES[target.type]
        return (
            None
            if rest.removeprefix(".") in known
            else f"reference {path!r}: a {target.type} step's properties are {', '.join(known)}"
        )
    if target.type not in OPERATIONS:
        return f"reference {path!r}: step type {target.type} has no properties"
    shape = _service_model().operation_model(OPERATIONS[target.type][2]).output_shape
    problem = _walk_property(rest, shape)
    return f"reference {path!r}: {problem}" if problem else None


def validate_definition(definition: dict) -> list[Finding]:
    """Every problem found; an empty list means the definition is valid."""
    findings: list[Finding] = []
    try:
        model = parse(definition)
    except DefinitionError as exc:
        return [Finding("", str(exc))]
    shape = [
        Finding(p.step, f"{p.field}: {p.message}" if p.field else p.message)
        for p in preflight_problems(model)
    ]
    if shape:  # the checks below assume the shapes they read
        return shape
    steps = model.steps
    params = {p.get("Name") for p in model.parameters if isinstance(p, dict)}
    used: set[str] = set()
    for info in steps.values():
        for path in iter_gets(info.own_values()):
            if path.startswith("Parameters."):
                used.add(path.split(".", 1)[1])
            problem = _check_reference(path, info, steps, params)
            if problem:
                findings.append(Finding(info.name, problem))
        if info.type in NO_REQUEST:
            continue
        if info.type == "Callback":
            queue = info.spec.get("SqsQueueUrl")
            if isinstance(queue, str) and not SQS_QUEUE_URL.match(queue):
                findings.append(Finding(info.name, f"SqsQueueUrl {queue[:120]!r} is not an SQS queue URL"))
            continue
        if info.type in CHECK_REQUESTS:
            operation, name_member = CHECK_REQUESTS[info.type]
            for problem in validate_request(operation, info.arguments, name_member):
                findings.append(Finding(info.name, f"{operation}: {problem}"))
            continue
        if info.type not in OPERATIONS:
            findings.append(
                Finding(info.name, f"step type {info.type[:80]!r} is not checked against botocore")
            )
            continue
        operation, name_member, _ = OPERATIONS[info.type]
        for problem in validate_request(operation, info.arguments, name_member):
            findings.append(Finding(info.name, f"{operation}: {problem}"))
    for unused in sorted(params - used):
        findings.append(Finding("", f"parameter {unused!r} is declared but never used"))
    # de-duplicate: a nested step's references are seen once per visit
    unique = list(dict.fromkeys((f.step, f.message) for f in findings))
    return [Finding(s, m) for s, m in unique]
