"""What changed between two definitions (deployed -> local), by parameter and by step, one line each."""

from __future__ import annotations

import json
from typing import Any

from mlops.definition.model import BRANCHES, parse
from mlops.definition.parameters import declared


def _steps_by_name(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every step (condition branches flattened); a branch keeps only its children's names."""
    out = {}
    for name, step in parse(definition).steps.items():
        spec = dict(step.spec)
        if step.type == "Condition":
            args = dict(step.arguments)
            for key, _ in BRANCHES:
                if isinstance(args.get(key), list):
                    args[key] = [child.get("Name") for child in args[key] if isinstance(child, dict)]
            spec["Arguments"] = args
        out[name] = spec
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k in sorted(value):
            out.update(_flatten(value[k], f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 120 else text[:117] + "..."


def _compare(label: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    lines = []
    for path in sorted(set(a) | set(b)):
        if path not in b:
            lines.append(f"  - {label}: {path}: {_show(a[path])}")
        elif path not in a:
            lines.append(f"  + {label}: {path}: {_show(b[path])}")
        elif a[path] != b[path]:
            lines.append(f"  ~ {label}: {path}: {_show(a[path])} -> {_show(b[path])}")
    return lines


def _section(kind: str, old: dict[str, Any], new: dict[str, Any], *, removed, added) -> list[str]:
    """Lines for the entries (parameters or steps) by name: removed, added, or changed field by field."""
    lines: list[str] = []
    for name in sorted(set(old) | set(new)):
        if name not in new:
            lines.append(removed(name, old[name]))
        elif name not in old:
            lines.append(added(name, new[name]))
        else:
            changed = _compare(f"{kind} {name}", old[name], new[name])
            if changed:
                lines.append(f"~ {kind} {name}")
                lines.extend(changed)
    return lines


def definition_diff(deployed: str | None, local: str) -> list[str]:
    """Readable differences deployed -> local, grouped by parameter and step; empty when equal."""
    new = json.loads(local)
    if deployed is None:
        return [f"+ pipeline not deployed ({len(new.get('Steps', []))} steps would be created)"]
    old = json.loads(deployed)
    if old == new:
        return []
    lines = _section(
        "parameter", declared(old), declared(new),
        removed=lambda name, _: f"- parameter {name}",
        added=lambda name, p: f"+ parameter {name} = {_show(p.get('DefaultValue'))}",
    )  # fmt: skip
    lines += _section(
        "step", _steps_by_name(old), _steps_by_name(new),
        removed=lambda name, s: f"- step {name} ({s.get('Type', '?')})",
        added=lambda name, s: f"+ step {name} ({s.get('Type', '?')})",
    )  # fmt: skip
    rest = {k for k in set(old) | set(new) if k not in ("Parameters", "Steps")}
    changed = _compare("pipeline", {k: old.get(k) for k in rest}, {k: new.get(k) for k in rest})
    lines.extend(changed)
    return lines
