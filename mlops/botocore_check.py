"""One way to check a request against botocore's service model, before anything is sent."""

from __future__ import annotations

import functools
import re
from typing import Any


@functools.cache
def service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """botocore's own ParamValidator findings for ``params``, one readable line each (empty when valid)."""
    from botocore.validate import ParamValidator

    shape = service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    if not report.has_errors():
        return []
    return [line.strip() for line in report.generate_report().splitlines() if line.strip()]


def service_problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """What the service itself would refuse in ``params``, in its words: botocore's ParamValidator findings
    (required members, types), then the constraints it leaves to the service (enums, maximum lengths and
    values, patterns). For the local stand-ins of AWS APIs."""
    shape = service_model(service).operation_model(operation).input_shape
    if shape is None:
        return []
    found = problems(service, operation, params)
    if not found:
        _constraint_problems(params, shape, "", found)
    return found


@functools.cache
def _pattern(pattern: str) -> re.Pattern | None:
    try:
        return re.compile(pattern)
    except re.error:  # a Java-only construct (\p{L}): left to the service, not guessed at
        return None


def _constraint_problems(value: Any, shape, path: str, out: list[str]) -> None:
    """What botocore's ParamValidator leaves to the service: enums, maximum lengths/values and patterns."""
    kind, meta = shape.type_name, shape.metadata

    def fail(constraint: str, show: bool = True) -> None:
        shown = f"Value '{str(value)[:100]}'" if show else "Value"
        out.append(f"{shown} at '{path}' failed to satisfy constraint: Member must {constraint}")

    too_long = "max" in meta and isinstance(value, list | dict | str) and len(value) > meta["max"]
    if kind == "structure" and isinstance(value, dict):
        for key, member in shape.members.items():
            if value.get(key) is not None:
                _constraint_problems(value[key], member, f"{path}.{key}" if path else key, out)
    elif kind in ("list", "map") and isinstance(value, list | dict):
        if too_long:
            fail(f"have length less than or equal to {meta['max']}", show=False)
        items = enumerate(value) if kind == "list" else value.items()
        for key, item in items:
            if kind == "map":
                _constraint_problems(key, shape.key, f"{path} key", out)
            _constraint_problems(
                item,
                shape.member if kind == "list" else shape.value,
                f"{path}[{key!r}]" if kind == "list" else f"{path}.{key}",
                out,
            )
    elif kind == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            fail(f"satisfy enum value set: [{', '.join(shape.enum)}]")
        elif too_long:
            fail(f"have length less than or equal to {meta['max']}", show=False)
        elif meta.get("pattern") and (pattern := _pattern(meta["pattern"])) and not pattern.fullmatch(value):
            fail(f"satisfy regular expression pattern: {meta['pattern']}")
    elif kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
        if not isinstance(value, bool) and "max" in meta and value > meta["max"]:
            fail(f"have value less than or equal to {meta['max']}")
