"""Evaluate the expressions of a pipeline definition JSON: ``Get``, ``Std:Join``, ``Std:JsonGet``,
parameters and conditions, exactly as they appear in the JSON (never our Python objects)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops.errors import DefinitionError

CONDITION_TYPES = (
    "Equals",
    "GreaterThan",
    "GreaterThanOrEqualTo",
    "LessThan",
    "LessThanOrEqualTo",
    "In",
    "Not",
    "Or",
)
# Keys by which SageMaker lets a property path index a list: Outputs['train'], FinalMetricDataList['loss'].
LIST_KEYS = ("OutputName", "InputName", "ChannelName", "MetricName", "PropertyFileName", "Name", "Key")
_TOKEN = re.compile(r"\.([A-Za-z0-9_:\-]+)|\[(\d+)\]|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]")


@dataclass
class Context:
    """What expressions can see while a step is resolved."""

    parameters: Mapping[str, Any]
    execution: Mapping[str, Any]
    steps: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    read_json: Callable[[str], Any] | None = None  # s3 uri -> parsed JSON, for Std:JsonGet
    symbolic_execution: bool = False  # leave Execution.* as "{Execution.X}" (used for cache keys)


# --------------------------------------------------------------------------------------- property paths


def parse_path(path: str) -> list[str | int]:
    """``Outputs['train'].S3Output.S3Uri`` -> ``["Outputs", "train", "S3Output", "S3Uri"]``."""
    text = path if path.startswith(("[", ".")) else "." + path
    tokens: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise DefinitionError(f"cannot parse property path {path!r} at {text[pos:]!r}")
        attr, index, sq, dq = m.groups()
        tokens.append(int(index) if index is not None else next(t for t in (attr, sq, dq) if t is not None))
        pos = m.end()
    return tokens


def walk(value: Any, tokens: list[str | int], where: str) -> Any:
    for token in tokens:
        if isinstance(value, Mapping) and not isinstance(token, int) and token in value:
            value = value[token]
        elif isinstance(value, list) and isinstance(token, int) and token < len(value):
            value = value[token]
        elif isinstance(value, list) and isinstance(token, str):
            found = [v for v in value if isinstance(v, Mapping) and any(v.get(k) == token for k in LIST_KEYS)]
            if not found:
                raise DefinitionError(f"{where}: no entry named {token!r}")
            value = found[0]
        else:
            raise DefinitionError(f"{where}: no property {token!r}")
    return value


# ------------------------------------------------------------------------------------------ expressions


def is_expression(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) == 1
        and next(iter(value)) in ("Get", "Std:Join", "Std:JsonGet")
    )


def references(value: Any) -> set[str]:
    """Names of the steps whose properties ``value`` reads (its data dependencies)."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        get = value.get("Get")
        if len(value) == 1 and isinstance(get, str) and get.startswith("Steps."):
            found.add(get.split(".", 2)[1].split("[", 1)[0])
        for v in value.values():
            found |= references(v)
    elif isinstance(value, list):
        for v in value:
            found |= references(v)
    return found


def resolve(value: Any, ctx: Context) -> Any:
    """A copy of ``value`` with every expression replaced by its value."""
    if isinstance(value, Mapping):
        if is_expression(value):
            kind, arg = next(iter(value.items()))
            if kind == "Get":
                return _get(arg, ctx)
            if kind == "Std:Join":
                return _join(arg, ctx)
            return _json_get(arg, ctx)
        return {k: resolve(v, ctx) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, ctx) for v in value]
    return value


def _get(path: Any, ctx: Context) -> Any:
    if not isinstance(path, str):
        raise DefinitionError(f"Get expects a string path, got {path!r}")
    head, _, rest = path.partition(".")
    if head == "Parameters":
        if rest not in ctx.parameters:
            raise DefinitionError(f"{path}: the definition declares no parameter {rest!r}")
        return ctx.parameters[rest]
    if head == "Execution":
        if ctx.symbolic_execution:
            return "{" + path + "}"
        if rest not in ctx.execution:
            raise DefinitionError(f"{path}: unknown execution variable {rest!r}")
        value = ctx.execution[rest]
        return value() if callable(value) else value
    if head == "Steps":
        name, sep, prop = rest.partition(".")
        if name not in ctx.steps:
            raise DefinitionError(f"{path}: step {name!r} has no recorded properties (did it run?)")
        return walk(ctx.steps[name], parse_path(prop) if sep else [], path)
    raise DefinitionError(f"Get {path!r}: expected Parameters.*, Execution.* or Steps.*")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return ""
    return str(value)


def _join(arg: Any, ctx: Context) -> str:
    if not isinstance(arg, Mapping) or not isinstance(arg.get("Values"), list):
        raise DefinitionError(f"Std:Join expects {{On, Values: [...]}}, got {arg!r}")
    return _text(resolve(arg.get("On", ""), ctx)).join(_text(resolve(v, ctx)) for v in arg["Values"])


def json_path(document: Any, path: str, where: str) -> Any:
    """The subset of JsonPath that pipelines use: ``a.b[0].c`` and ``a['b']``."""
    return walk(
        document, parse_path(path.removeprefix("$").lstrip(".") if path.startswith("$") else path), where
    )


def _json_get(arg: Any, ctx: Context) -> Any:
    if not isinstance(arg, Mapping) or "Path" not in arg:
        raise DefinitionError(f"Std:JsonGet expects {{PropertyFile | S3Uri, Path}}, got {arg!r}")
    if "PropertyFile" in arg:
        uri = resolve(arg["PropertyFile"], ctx)
    elif "S3Uri" in arg:
        uri = resolve(arg["S3Uri"], ctx)
    else:
        raise DefinitionError(f"Std:JsonGet needs PropertyFile or S3Uri, got {sorted(arg)}")
    if ctx.symbolic_execution:
        return {"Std:JsonGet": {"S3Uri": uri, "Path": arg["Path"]}}
    if ctx.read_json is None:
        raise DefinitionError("Std:JsonGet needs the store, which this context does not have")
    path = resolve(arg["Path"], ctx)
    return json_path(ctx.read_json(uri), str(path), f"Std:JsonGet {uri} {path}")


# ------------------------------------------------------------------------------------------- conditions


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    """SageMaker compares numbers as numbers even when one side came out of a JSON file as text."""

    def num(v):
        if isinstance(v, bool):
            return v
        if isinstance(v, int | float):
            return v
        try:
            return float(v)
        except (TypeError, ValueError):
            return None

    if isinstance(left, bool) or isinstance(right, bool):
        return _text(left), _text(right)
    nl, nr = num(left), num(right)
    if (
        nl is not None
        and nr is not None
        and (isinstance(left, int | float) or isinstance(right, int | float))
    ):
        return nl, nr
    return left, right


def evaluate(condition: Any, ctx: Context) -> bool:
    if not isinstance(condition, Mapping) or condition.get("Type") not in CONDITION_TYPES:
        kind = condition.get("Type") if isinstance(condition, Mapping) else condition
        raise DefinitionError(f"unsupported condition {kind!r} (supported: {', '.join(CONDITION_TYPES)})")
    kind = condition["Type"]
    if kind == "Not":
        return not evaluate(condition["Condition"], ctx)
    if kind == "Or":
        return any(evaluate(c, ctx) for c in condition["Conditions"])
    if kind == "In":
        query = resolve(condition["QueryValue"], ctx)
        return any(_equal(query, resolve(v, ctx)) for v in condition["Values"])
    left, right = _comparable(resolve(condition["LeftValue"], ctx), resolve(condition["RightValue"], ctx))
    if kind == "Equals":
        return left == right
    try:
        return {
            "GreaterThan": lambda: left > right,
            "GreaterThanOrEqualTo": lambda: left >= right,
            "LessThan": lambda: left < right,
            "LessThanOrEqualTo": lambda: left <= right,
        }[kind]()
    except TypeError:
        raise DefinitionError(f"{kind}: cannot compare {left!r} with {right!r}") from None


def _equal(a: Any, b: Any) -> bool:
    a, b = _comparable(a, b)
    return a == b


def dumps_canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
