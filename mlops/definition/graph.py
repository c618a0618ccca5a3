"""The DAG of a definition as Mermaid (renders on GitHub) and, where Graphviz is installed, a picture.

Given an execution's step statuses (a plain mapping step name -> status string, as the local home or
SageMaker's ListPipelineExecutionSteps report them) each step is coloured by its status, cache hits marked.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Collection, Mapping
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


# status -> (class, Mermaid style, Graphviz fill colour, border colour); a status not here is "not run"
STATUS_STYLES = {
    "Succeeded": ("succeeded", "fill:#d3f0d8,stroke:#2e7d32,color:#1b5e20", "#d3f0d8", "#2e7d32"),
    "Failed": ("failed", "fill:#f8d4d4,stroke:#c62828,color:#b71c1c", "#f8d4d4", "#c62828"),
    "Executing": ("executing", "fill:#d4e4f8,stroke:#1565c0,color:#0d47a1", "#d4e4f8", "#1565c0"),
    "Stopped": ("stopped", "fill:#fbe9c6,stroke:#ef6c00,color:#e65100", "#fbe9c6", "#ef6c00"),
}
NOT_RUN = ("notrun", "fill:#eeeeee,stroke:#9e9e9e,color:#757575", "#eeeeee", "#9e9e9e")
CACHED = ("cached", "fill:#d3f0d8,stroke:#2e7d32,color:#1b5e20,stroke-dasharray:5 3", "#d3f0d8", "#2e7d32")


def _status_style(name: str, statuses: Mapping[str, str], cached: Collection[str]) -> tuple[str, ...]:
    if name in cached:
        return CACHED
    return STATUS_STYLES.get(statuses.get(name, ""), NOT_RUN)


def _status_label(name: str, statuses: Mapping[str, str], cached: Collection[str]) -> str:
    if name in cached:
        return "cache hit"
    status = statuses.get(name)
    return "not run" if status in (None, "", "NotExecuted", "Pending") else status


def mermaid(definition: dict, statuses: Mapping[str, str] | None = None, cached: Collection[str] = ()) -> str:
    """The DAG as a Mermaid flowchart; with ``statuses`` (step name -> status) a class per status:
    succeeded, failed, executing, stopped, notrun (skipped, pending or absent) and cached (``cached``:
    the steps served from the cache)."""
    order, steps, edges = _edges(definition)
    lines = ["flowchart TD"]
    for name in order:
        left, right = SHAPES.get(steps[name].type, ("(", ")"))
        note = steps[name].type
        if statuses is not None:
            note += f" · {_status_label(name, statuses, cached)}"
        lines.append(f'    {_id(name)}{left}"{name}<br/><small>{note}</small>"{right}')
    for src, dst, label in edges:
        arrow = f"-->|{label}|" if label else "-->"
        lines.append(f"    {_id(src)} {arrow} {_id(dst)}")
    if statuses is not None:
        classes: dict[str, list[str]] = {}
        for name in order:
            classes.setdefault(_status_style(name, statuses, cached)[0], []).append(_id(name))
        for klass, style, *_ in (*STATUS_STYLES.values(), NOT_RUN, CACHED):
            if klass in classes:
                lines.append(f"    classDef {klass} {style}")
        for klass, ids in classes.items():
            lines.append(f"    class {','.join(ids)} {klass}")
    return "\n".join(lines) + "\n"


def dot(
    definition: dict,
    statuses: Mapping[str, str] | None = None,
    cached: Collection[str] = (),
    notes: Mapping[str, str] | None = None,
    anchors: bool = False,
) -> str:
    """The DAG in Graphviz's language; ``notes`` adds a line to a step's box (its duration, say) and
    ``anchors`` links each box to ``#step-<id>`` (the report's row for it)."""
    order, steps, edges = _edges(definition)
    shapes = {"Condition": "diamond", "Fail": "octagon", "Training": "box3d", "RegisterModel": "cylinder"}
    lines = [
        "digraph pipeline {",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded", fontname="Helvetica"];',
    ]
    for name in order:
        label, extra = f"{name}\\n({steps[name].type})", ""
        if statuses is not None:
            _, _, fill, border = _status_style(name, statuses, cached)
            style = "rounded,filled" + (",dashed" if name in cached else "")
            label += f"\\n{_status_label(name, statuses, cached)}"
            extra = f', style="{style}", fillcolor="{fill}", color="{border}"'
        if notes and notes.get(name):
            label += f"\\n{notes[name]}"
        if anchors:
            extra += f', URL="#step-{_id(name)}", tooltip="{name}"'
        lines.append(f'  {_id(name)} [label="{label}", shape={shapes.get(steps[name].type, "box")}{extra}];')
    for src, dst, label in edges:
        lines.append(f"  {_id(src)} -> {_id(dst)}" + (f' [label="{label}"]' if label else "") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(
    definition: dict,
    statuses: Mapping[str, str] | None = None,
    cached: Collection[str] = (),
    notes: Mapping[str, str] | None = None,
) -> str | None:
    """The DAG as SVG text to inline in a page (boxes link to ``#step-<id>``); None without Graphviz."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    proc = subprocess.run(
        [exe, "-Tsvg"], input=dot(definition, statuses, cached, notes, anchors=True), text=True, capture_output=True
    )
    if proc.returncode != 0:
        raise MlopsError(f"graphviz failed to draw the DAG: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout[proc.stdout.index("<svg") :]


def anchor(name: str) -> str:
    """The id of a step's element in a page that links to it (see :func:`svg`)."""
    return f"step-{_id(name)}"


def render_picture(
    definition: dict, dest: Path, statuses: Mapping[str, str] | None = None, cached: Collection[str] = ()
) -> Path | None:
    """Write ``dest`` (format from its suffix) with Graphviz, coloured as :func:`mermaid` is; None when
    ``dot`` is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        return None
    fmt = dest.suffix.lstrip(".") or "svg"
    proc = subprocess.run(
        [exe, f"-T{fmt}", "-o", str(dest)],
        input=dot(definition, statuses, cached),
        text=True,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise MlopsError(f"graphviz failed to render {dest}: {proc.stderr.strip().splitlines()[-1:]}")
    return dest
