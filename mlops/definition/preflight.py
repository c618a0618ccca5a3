"""Checks of a definition's shape before anything runs: every problem names the step and the field.

``parse`` (mlops.definition.model) knows steps, names and dependencies; this module checks what the steps
carry, so that a bad value is refused before the first step starts rather than found after earlier steps
ran (or crashing the sandbox launcher):

- ``Parameters``: a list of objects with a string Name, a known Type and a DefaultValue of that type;
- every step: ``Arguments`` an object, ``CacheConfig`` (Enabled a boolean, ExpireAfter a duration string),
  ``RetryPolicies``, ``PropertyFiles``, ``DependsOn``;
- every expression (``Get``, ``Std:Join``, ``Std:JsonGet``) well formed;
- every Condition: a non-empty ``Conditions`` list of objects, each with the operands its Type needs
  (LeftValue/RightValue, QueryValue/Values, Condition, Conditions), operands values or expressions;
- a job step's request (Processing, Training, RegisterModel, ...): objects, lists and maps where botocore's
  SageMaker model has them, and SageMaker's own limits on lengths and entry counts (botocore checks
  minimums only): a 60 MB ``Environment`` value is refused with the step, the field and the limit;
- instance counts: an ``InstanceCount`` over the maximum botocore's model gives it (ProcessingInstanceCount:
  100) and, in ``check`` (what ``mlops run`` calls), over the hosts this machine runs (MAX_LOCAL_HOSTS).

``check`` raises the first problem as a DefinitionError; ``problems`` returns them all (validate reports
them as findings).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops.definition.expressions import CONDITION_TYPES, is_expression
from mlops.definition.model import Definition, parse
from mlops.definition.parameters import PARAMETER_TYPES, convert
from mlops.errors import DefinitionError, ParameterError

# Step type -> (create operation, name member the pipeline fills in at run time, describe operation).
OPERATIONS = {
    "Processing": ("CreateProcessingJob", "ProcessingJobName", "DescribeProcessingJob"),
    "Training": ("CreateTrainingJob", "TrainingJobName", "DescribeTrainingJob"),
    "Transform": ("CreateTransformJob", "TransformJobName", "DescribeTransformJob"),
    "Tuning": (
        "CreateHyperParameterTuningJob",
        "HyperParameterTuningJobName",
        "DescribeHyperParameterTuningJob",
    ),
    "RegisterModel": ("CreateModelPackage", None, "DescribeModelPackage"),
    "Model": ("CreateModel", "ModelName", "DescribeModel"),
    "CreateModel": ("CreateModel", "ModelName", "DescribeModel"),
    "EndpointConfig": ("CreateEndpointConfig", "EndpointConfigName", "DescribeEndpointConfig"),
    "Endpoint": ("CreateEndpoint", None, "DescribeEndpoint"),
}
# Check steps whose Arguments are a processing job request (the analyzer's), though the step is no job step
CHECK_REQUESTS = {"QualityCheck": ("CreateProcessingJob", "ProcessingJobName")}
OPERANDS = {"Not": ("Condition",), "Or": ("Conditions",), "In": ("QueryValue", "Values")}
COMPARISON_OPERANDS = ("LeftValue", "RightValue")
DURATION = re.compile(
    r"\d+[smhdw]|P(?=\d|T\d)(?:\d+Y)?(?:\d+M)?(?:\d+W)?(?:\d+D)?(?:T(?=\d)(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?"
)
RETRY_NUMBERS = ("IntervalSeconds", "BackoffRate", "MaxAttempts", "ExpireAfterMin")
SIMPLE_KEY = re.compile(r"^[A-Za-z0-9_:\-]{1,64}$")
# Each job instance is a process tree with its own sandbox directory on this machine: more than this many
# hosts in one job is a typo (InstanceCount 100000 once made 100,000 directories and hung), not a plan.
MAX_LOCAL_HOSTS = 64
# Where a job step's request names its instance count(s), per step type. SageMaker's own ceiling comes from
# botocore where its model has one (ProcessingInstanceCount: max 100). TrainingInstanceCount has none in
# the model: the per-job number of training instances is an adjustable account quota (Service Quotas), not
# an API maximum, so no SageMaker ceiling is applied to training here; the local one below still is.
INSTANCE_COUNTS = {
    "Processing": ("ProcessingResources", "ClusterConfig", "InstanceCount"),
    "Training": ("ResourceConfig", "InstanceCount"),
}


@dataclass(frozen=True)
class Problem:
    step: str  # "" for definition-level problems (Parameters)
    field: str  # dotted path inside the step, e.g. Arguments.Environment.X
    message: str

    def __str__(self) -> str:
        where = f"step {self.step}: " if self.step else ""
        return f"{where}{self.field}: {self.message}" if self.field else f"{where}{self.message}"


def _key(key: Any) -> str:
    text = str(key)
    return text if SIMPLE_KEY.match(text) else repr(text[:40] + ("…" if len(text) > 40 else ""))


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{_key(key)}" if path else _key(key)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Collector:
    def __init__(self) -> None:
        self.found: list[Problem] = []

    def add(self, step: str, field: str, message: str) -> None:
        self.found.append(Problem(step, field, " ".join(message.split())))


# ------------------------------------------------------------------------------------------ parameters


def _parameters(params: Any, out: _Collector) -> None:
    if not isinstance(params, list):
        out.add("", "Parameters", f"must be a list of objects, each with a Name (got {_kind(params)})")
        return
    for i, spec in enumerate(params):
        where = f"Parameters[{i}]"
        if not isinstance(spec, Mapping) or not isinstance(spec.get("Name"), str) or not spec["Name"]:
            out.add("", where, "must be an object with a string Name")
            continue
        where = f"parameter {_key(spec['Name'])}"
        ptype = spec.get("Type", "String")
        if ptype not in PARAMETER_TYPES:
            out.add(
                "", where, f"unsupported Type {_short(ptype)} (expected one of {', '.join(PARAMETER_TYPES)})"
            )
            continue
        if "DefaultValue" in spec:
            default = spec["DefaultValue"]
            if isinstance(default, list | Mapping) or default is None:
                out.add("", where, f"DefaultValue must be a {ptype}, got {_kind(default)}")
            else:
                try:
                    convert("x", ptype, default)
                except (ParameterError, DefinitionError):
                    out.add("", where, f"DefaultValue {_short(default)} is not a {ptype}")
        enum = spec.get("EnumValues")
        if enum is not None and not isinstance(enum, list):
            out.add("", where, f"EnumValues must be a list, got {_kind(enum)}")


# ----------------------------------------------------------------------------------------- expressions


def _expressions(value: Any, step: str, path: str, out: _Collector) -> None:
    """Every Get / Std:Join / Std:JsonGet inside ``value`` is well formed (iterative: any depth)."""
    stack = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, list):
            stack.extend((v, _join(where, i)) for i, v in enumerate(node))
            continue
        if not isinstance(node, Mapping):
            continue
        if is_expression(node):
            kind, arg = next(iter(node.items()))
            if kind == "Get":
                if not isinstance(arg, str) or not arg.startswith(("Parameters.", "Execution.", "Steps.")):
                    out.add(
                        step,
                        where,
                        f"Get expects a path Parameters.*, Execution.* or Steps.*, got {_short(arg)}",
                    )
                continue
            if kind == "Std:Join":
                if not isinstance(arg, Mapping) or not isinstance(arg.get("Values"), list):
                    out.add(step, where, f"Std:Join expects {{On, Values: [...]}}, got {_kind(arg)}")
                    continue
                if "On" in arg and not isinstance(arg["On"], str) and not is_expression(arg["On"]):
                    out.add(step, f"{where}.Std:Join.On", f"must be a string, got {_kind(arg['On'])}")
                for i, v in enumerate(arg["Values"]):
                    if isinstance(v, Mapping) and not is_expression(v) or isinstance(v, list):
                        out.add(
                            step,
                            f"{where}.Std:Join.Values[{i}]",
                            f"must be a value or an expression, got {_kind(v)}",
                        )
                    else:
                        stack.append((v, f"{where}.Std:Join.Values[{i}]"))
                continue
            if (
                not isinstance(arg, Mapping)
                or "Path" not in arg
                or not ("PropertyFile" in arg or "S3Uri" in arg)
            ):
                out.add(step, where, "Std:JsonGet expects {PropertyFile | S3Uri, Path}")
                continue
            for member in ("PropertyFile", "S3Uri", "Path"):
                if member in arg:
                    v = arg[member]
                    if not isinstance(v, str) and not is_expression(v):
                        out.add(
                            step,
                            f"{where}.Std:JsonGet.{member}",
                            f"must be a string or an expression, got {_kind(v)}",
                        )
                    else:
                        stack.append((v, f"{where}.Std:JsonGet.{member}"))
            continue
        stack.extend((v, _join(where, k)) for k, v in node.items())


# ------------------------------------------------------------------------------------------ conditions


def _operand(value: Any, step: str, where: str, out: _Collector) -> None:
    if isinstance(value, list) or (isinstance(value, Mapping) and not is_expression(value)):
        out.add(step, where, f"must be a value or an expression (Get, Std:JsonGet, ...), got {_kind(value)}")


def _conditions(conditions: Any, step: str, path: str, out: _Collector) -> None:
    if not isinstance(conditions, list) or not conditions:
        out.add(step, path, f"must be a non-empty list of conditions, got {_kind(conditions)}")
        return
    stack = [(c, _join(path, i)) for i, c in enumerate(conditions)]
    while stack:
        cond, where = stack.pop()
        if not isinstance(cond, Mapping):
            out.add(step, where, f"a condition must be an object with a Type, got {_kind(cond)}")
            continue
        kind = cond.get("Type")
        if kind not in CONDITION_TYPES:
            out.add(
                step,
                where,
                f"unsupported condition Type {_short(kind)} (supported: {', '.join(CONDITION_TYPES)})",
            )
            continue
        needed = OPERANDS.get(kind, COMPARISON_OPERANDS)
        missing = [k for k in needed if k not in cond]
        if missing:
            out.add(step, where, f"{kind} condition needs {' and '.join(missing)}")
            continue
        if kind == "Not":
            stack.append((cond["Condition"], f"{where}.Condition"))
        elif kind == "Or":
            nested = cond["Conditions"]
            if not isinstance(nested, list) or not nested:
                out.add(
                    step,
                    f"{where}.Conditions",
                    f"must be a non-empty list of conditions, got {_kind(nested)}",
                )
            else:
                stack.extend((c, f"{where}.Conditions[{i}]") for i, c in enumerate(nested))
        elif kind == "In":
            _operand(cond["QueryValue"], step, f"{where}.QueryValue", out)
            values = cond["Values"]
            if not isinstance(values, list):
                out.add(step, f"{where}.Values", f"must be a list, got {_kind(values)}")
            else:
                for i, v in enumerate(values):
                    _operand(v, step, f"{where}.Values[{i}]", out)
        else:
            for member in COMPARISON_OPERANDS:
                _operand(cond[member], step, f"{where}.{member}", out)


# -------------------------------------------------------------------------------- requests (botocore)


def _request(value: Any, shape, step: str, path: str, out: _Collector, operation: str = "") -> None:
    """Containers where the model has them, and the model's max lengths / counts (botocore checks min only)."""
    stack = [(value, shape, path)]
    while stack:
        node, shp, where = stack.pop()
        if shp is None or is_expression(node):
            continue
        kind, limit = shp.type_name, shp.metadata.get("max")
        if kind == "structure":
            if not isinstance(node, Mapping):
                out.add(step, where, f"must be an object ({shp.name}), got {_kind(node)}")
                continue
            stack.extend((v, shp.members.get(k), _join(where, k)) for k, v in node.items())
        elif kind == "list":
            if not isinstance(node, list):
                out.add(step, where, f"must be a list ({shp.name}), got {_kind(node)}")
                continue
            if limit is not None and len(node) > limit:
                out.add(
                    step, where, f"has {len(node)} entries; SageMaker's {operation} allows at most {limit}"
                )
            stack.extend((v, shp.member, _join(where, i)) for i, v in enumerate(node))
        elif kind == "map":
            if not isinstance(node, Mapping):
                out.add(step, where, f"must be an object ({shp.name}), got {_kind(node)}")
                continue
            if limit is not None and len(node) > limit:
                out.add(
                    step, where, f"has {len(node)} entries; SageMaker's {operation} allows at most {limit}"
                )
            key_max = shp.key.metadata.get("max")
            for k, v in node.items():
                if key_max is not None and isinstance(k, str) and len(k) > key_max:
                    out.add(
                        step,
                        where,
                        f"key {_key(k)} is {len(k)} characters long; SageMaker's {operation} allows at most {key_max}",
                    )
                stack.append((v, shp.value, _join(where, k)))
        else:  # a scalar
            if isinstance(node, list | Mapping):
                out.add(step, where, f"must be a {kind}, got {_kind(node)}")
            elif kind == "string" and isinstance(node, str) and limit is not None and len(node) > limit:
                out.add(
                    step,
                    where,
                    f"is {len(node)} characters long; SageMaker's {operation} allows at most {limit}",
                )
            elif (
                kind == "integer"
                and shp.name.endswith("InstanceCount")
                and isinstance(node, int)
                and not isinstance(node, bool)
                and limit is not None
                and node > limit
            ):
                out.add(step, where, f"= {node}; SageMaker's {operation} allows at most {limit} ({shp.name})")


def _input_shape(step_type: str):
    from mlops.botocore_check import service_model

    operation = CHECK_REQUESTS[step_type][0] if step_type in CHECK_REQUESTS else OPERATIONS[step_type][0]
    return service_model("sagemaker").operation_model(operation).input_shape


# --------------------------------------------------------------------------------------------- steps


def _step_fields(spec: Mapping[str, Any], step: str, out: _Collector) -> None:
    if "Arguments" in spec and not isinstance(spec["Arguments"], Mapping):
        out.add(step, "Arguments", f"must be an object, got {_kind(spec['Arguments'])}")
    cache = spec.get("CacheConfig")
    if cache is not None:
        if not isinstance(cache, Mapping):
            out.add(step, "CacheConfig", f"must be an object {{Enabled, ExpireAfter}}, got {_kind(cache)}")
        else:
            if "Enabled" in cache and not isinstance(cache["Enabled"], bool):
                out.add(step, "CacheConfig.Enabled", f"must be true or false, got {_short(cache['Enabled'])}")
            expire = cache.get("ExpireAfter")
            if expire is not None:
                if not isinstance(expire, str):
                    out.add(
                        step,
                        "CacheConfig.ExpireAfter",
                        f"must be a duration string like P30D, got {_kind(expire)}",
                    )
                elif not DURATION.fullmatch(expire.strip()):
                    out.add(
                        step,
                        "CacheConfig.ExpireAfter",
                        f"{_short(expire)} is not a duration: ISO 8601 (P30D, PT12H) or the short form (30d, 12h)",
                    )
    retries = spec.get("RetryPolicies")
    if retries is not None:
        if not isinstance(retries, list):
            out.add(step, "RetryPolicies", f"must be a list of objects, got {_kind(retries)}")
        else:
            for i, policy in enumerate(retries):
                where = f"RetryPolicies[{i}]"
                if not isinstance(policy, Mapping):
                    out.add(step, where, f"must be an object, got {_kind(policy)}")
                    continue
                types = policy.get("ExceptionType")
                if types is not None and (
                    not isinstance(types, list) or not all(isinstance(t, str) for t in types)
                ):
                    out.add(step, f"{where}.ExceptionType", "must be a list of strings")
                for member in RETRY_NUMBERS:
                    v = policy.get(member)
                    if member in policy and (isinstance(v, bool) or not isinstance(v, int | float)):
                        out.add(step, f"{where}.{member}", f"must be a number, got {_kind(v)}")
    files = spec.get("PropertyFiles")
    if files is not None:
        if not isinstance(files, list):
            out.add(step, "PropertyFiles", f"must be a list of objects, got {_kind(files)}")
        else:
            for i, pf in enumerate(files):
                if not isinstance(pf, Mapping) or not isinstance(pf.get("PropertyFileName"), str):
                    out.add(step, f"PropertyFiles[{i}]", "must be an object with a string PropertyFileName")
                    continue
                for member in ("OutputName", "FilePath"):
                    if member in pf and not isinstance(pf[member], str):
                        out.add(
                            step, f"PropertyFiles[{i}].{member}", f"must be a string, got {_kind(pf[member])}"
                        )


def _dig(node: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node


def _local_hosts(step_type: str, args: Mapping[str, Any], step: str, limit: int, out: _Collector) -> None:
    """A job step's literal instance count(s) against the hosts this machine runs (expressions are left to
    the runtime, which refuses them before creating a host)."""
    counts: list[tuple[str, Any]] = []
    if step_type in INSTANCE_COUNTS:
        path = INSTANCE_COUNTS[step_type]
        counts.append(("Arguments." + ".".join(path), _dig(args, path)))
    groups = _dig(args, ("ResourceConfig", "InstanceGroups")) if step_type == "Training" else None
    if isinstance(groups, list):
        for i, g in enumerate(groups):
            counts.append(
                (f"Arguments.ResourceConfig.InstanceGroups[{i}].InstanceCount", _dig(g, ("InstanceCount",)))
            )
        total = sum(c for _, c in counts[1:] if isinstance(c, int) and not isinstance(c, bool))
        counts.append(("Arguments.ResourceConfig.InstanceGroups (all groups)", total))
    for where, count in counts:
        if isinstance(count, int) and not isinstance(count, bool) and count > limit:
            out.add(
                step,
                where,
                f"= {count}: this machine runs at most {limit} local hosts per job (MAX_LOCAL_HOSTS)",
            )


def problems(
    definition: Mapping[str, Any] | Definition, *, max_local_hosts: int | None = None
) -> list[Problem]:
    """Every shape problem of a definition that ``parse`` accepts (a DefinitionError when it does not);
    with ``max_local_hosts``, also job steps asking for more hosts than that."""
    model = definition if isinstance(definition, Definition) else parse(definition)
    out = _Collector()
    _parameters(model.raw.get("Parameters") or [], out)
    for step in model.steps.values():
        spec, name = step.spec, step.name
        _step_fields(spec, name, out)
        values = step.own_values()
        _expressions(values.get("Arguments"), name, "Arguments", out)
        _expressions(spec.get("PropertyFiles"), name, "PropertyFiles", out)
        args = spec.get("Arguments")
        if not isinstance(args, Mapping):
            continue
        if step.type == "Condition":
            _conditions(args.get("Conditions"), name, "Arguments.Conditions", out)
        elif step.type == "Fail":
            message = args.get("ErrorMessage")
            if (
                message is not None
                and not isinstance(message, str | int | float)
                and not is_expression(message)
            ):
                out.add(
                    name, "Arguments.ErrorMessage", f"must be a string or an expression, got {_kind(message)}"
                )
        elif step.type in CHECK_REQUESTS:
            _request(args, _input_shape(step.type), name, "Arguments", out, CHECK_REQUESTS[step.type][0])
        elif step.type in OPERATIONS:
            _request(args, _input_shape(step.type), name, "Arguments", out, OPERATIONS[step.type][0])
            if max_local_hosts is not None:
                _local_hosts(step.type, args, name, max_local_hosts, out)
    unique = list(dict.fromkeys(out.found))
    return unique


def check(
    definition: Mapping[str, Any] | Definition, *, max_local_hosts: int | None = MAX_LOCAL_HOSTS
) -> None:
    """Raise the first problem as a one-line DefinitionError naming the step and the field; by default
    (``mlops run``) a job step over this machine's MAX_LOCAL_HOSTS is one."""
    found = problems(definition, max_local_hosts=max_local_hosts)
    if found:
        more = (
            f" (and {len(found) - 1} more problem(s); `mlops validate` lists them)" if len(found) > 1 else ""
        )
        raise DefinitionError(f"{found[0]}{more}")
