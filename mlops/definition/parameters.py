"""Pipeline parameters, one set of rules for every path that starts an execution (local run and AWS start):
declared types, defaults, enum values, and ``NAME=VALUE`` pairs from the command line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mlops.errors import DefinitionError, ParameterError

PARAMETER_TYPES = ("String", "Integer", "Float", "Boolean")


def convert(name: str, ptype: str, raw: Any) -> Any:
    """``raw`` as the declared parameter Type, or a ParameterError naming the parameter."""
    if ptype == "String":
        return str(raw)
    text = str(raw).strip()
    if ptype == "Boolean":
        if isinstance(raw, bool):
            return raw
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ParameterError(f"parameter {name} is Boolean: expected true or false, got {raw!r}")
    if ptype == "Integer":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if re.fullmatch(r"[+-]?\d+", text):
            return int(text)
        raise ParameterError(f"parameter {name} is Integer: expected a whole number, got {raw!r}")
    if ptype == "Float":
        try:
            if isinstance(raw, bool):
                raise ValueError
            return float(text)
        except ValueError:
            raise ParameterError(f"parameter {name} is Float: expected a number, got {raw!r}") from None
    raise DefinitionError(
        f"parameter {name} has unsupported Type {ptype!r} (expected one of {PARAMETER_TYPES})"
    )


def parameter_values(definition: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults from the definition with ``overrides`` applied, each converted to its declared Type."""
    declared_specs = declared(definition)
    unknown = sorted(set(overrides) - set(declared_specs))
    if unknown:
        known = ", ".join(sorted(declared_specs)) or "none"
        raise ParameterError(f"unknown parameter {unknown[0]} (the definition declares: {known})")
    values: dict[str, Any] = {}
    for name, spec in declared_specs.items():
        ptype = spec.get("Type", "String")
        if name in overrides:
            values[name] = convert(name, ptype, overrides[name])
        elif "DefaultValue" in spec:
            values[name] = convert(name, ptype, spec["DefaultValue"])
        else:
            raise ParameterError(f"parameter {name} ({ptype}) has no default: pass --param {name}=VALUE")
        allowed = spec.get("EnumValues")
        if allowed and values[name] not in allowed:
            raise ParameterError(f"parameter {name} must be one of {allowed}, got {values[name]!r}")
    return values


def parse_assignments(pairs: list[str] | None) -> dict[str, str]:
    """``["K=V", ...]`` from the command line into a dict; a pair without ``=`` is a one-line error."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ParameterError(f"--param expects NAME=VALUE, got {pair!r}")
        out[name.strip()] = value
    return out


def declared(definition: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{name: parameter spec}`` of a definition; refuses a Parameters field that is not a list of objects."""
    raw = definition.get("Parameters") or []
    if not isinstance(raw, list) or not all(
        isinstance(p, Mapping) and isinstance(p.get("Name"), str) for p in raw
    ):
        raise DefinitionError("Parameters must be a list of objects, each with a Name")
    return {p["Name"]: dict(p) for p in raw}
