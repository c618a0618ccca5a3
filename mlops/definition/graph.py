"""The DAG of a definition as Mermaid (renders on GitHub) and, where Graphviz is installed, a picture."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from mlops.definition.model import parse
from mlops.errors import MlopsError

SHAPES = {
    "Processing": ("[", "]"),
    "Training": ("[[", "]]"),
    "Condition": ("{", "}"),
    "Fail": ("[/", "\\]"),
    "RegisterModel": ("[(", ")]"),
}


def _id(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def _edges(definition: dict) -> tuple[list[str], dict, list[tuple[str, str, str]]]:
    model = parse(definition)
    steps, order = model.steps, model.order
    edges = []
    for name in order:
        info = steps[name]
        for dep in sorted(info.deps):
            label = ""
            if info.parent == dep:
                label = "true" if info.branch[1] else "false"
            edges.append((dep, name, label))
    return order, steps, edges


def mermaid(definition: dict) -> str:
    order, steps, edges = _edges(definition)
    lines = ["flowchart TD"]
    for name in order:
        left, right = SHAPES.get(steps[name].type, ("(", ")"))
        lines.append(f'    {_id(name)}{left}"{name}<br/><small>{steps[name].type}</small>"{right}')
    for src, dst, label in edges:
        arrow = f"-->|{label}|" if label else "-->"
        lines.append(f"    {_id(src)} {arrow} {_id(dst)}")
    return "\n".join(lines) + "\n"


def dot(definition: dict) -> str:
    order, steps, edges = _edges(definition)
    shapes = {"Condition": "diamond", "Fail": "octagon", "Training": "box3d", "RegisterModel": "cylinder"}
    lines = [
        "digraph pipeline {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded", fontname="Helvetica"];',
    ]
    for name in order:
        lines.append(
            f'  {_id(name)} [label="{name}\\n({steps[name].type})", shape={shapes.get(steps[name].type, "box")}];'
        )
    for src, dst, label in edges:
        lines.append(f"  {_id(src)} -> {_id(dst)}" + (f' [label="{label}"]' if label else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_picture(definition: dict, dest: Path) -> Path | None:
    """Write ``dest`` (format from its suffix) with Graphviz; None when ``dot`` is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    fmt = dest.suffix.lstrip(".") or "svg"
    proc = subprocess.run(
        [exe, f"-T{fmt}", "-o", str(dest)], input=dot(definition), text=True, capture_output=True
    )
    if proc.returncode != 0:
        raise MlopsError(f"graphviz failed to render {dest}: {proc.stderr.strip().splitlines()[-1:]}")
    return dest
