"""``mlops report``: one HTML file that tells an execution's story and works offline (no CDN: its styles,
the DAG and the curves are inline). It is written to ``<home>/executions/<id>/report.html`` (beside the
execution's logs, which it links relatively) with the data docs of each step made to render offline under
``report-data-docs/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError
from mlops.local.report.collect import ReportData, collect
from mlops.local.state.home import Home, atomic_write

TEMPLATE = Path(__file__).with_name("report.html.j2")
MAX_FLAT = 300


@dataclass
class WrittenReport:
    path: Path
    data_docs: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Matrix:
    """A dict of dicts of numbers (a confusion matrix, as SageMaker's model-quality reports hold one)."""

    rows: list[str]
    columns: list[str]
    cells: dict[str, dict[str, Any]]


def _matrix(doc: dict) -> Matrix | None:
    if len(doc) < 2 or not all(isinstance(v, dict) and v for v in doc.values()):
        return None
    if not all(
        isinstance(x, int | float) and not isinstance(x, bool) for v in doc.values() for x in v.values()
    ):
        return None
    columns = list(dict.fromkeys(c for v in doc.values() for c in v))
    return Matrix(rows=list(doc), columns=columns, cells=doc)


def flatten(doc: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``[(dotted.path, scalar or Matrix)]`` of a JSON document, SageMaker's ``{"value": v}`` leaves read
    as ``v``."""
    if isinstance(doc, dict) and prefix and (matrix := _matrix(doc)) is not None:
        return [(prefix, matrix)]
    if isinstance(doc, dict):
        if set(doc) <= {"value", "standard_deviation"} and "value" in doc:
            std = doc.get("standard_deviation")
            numeric = isinstance(std, int | float) and not isinstance(std, bool) and std == std  # NaN: none
            return [(prefix, doc["value"])] + ([(f"{prefix} (std)", std)] if numeric else [])
        out: list[tuple[str, Any]] = []
        for key, value in doc.items():
            out += flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return out[:MAX_FLAT]
    if isinstance(doc, list):
        if all(not isinstance(v, dict | list) for v in doc):
            return [(prefix, json.dumps(doc) if len(doc) <= 12 else f"[{len(doc)} values]")]
        return [(prefix, f"[{len(doc)} items]")]
    return [(prefix, doc)]


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "" if value is None else str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _offline_docs(data: ReportData, out_dir: Path, progress, warnings: list[str]) -> list[dict[str, Any]]:
    """Each data docs site copied under ``out_dir`` with its CDN assets vendored; on failure the site as
    the job wrote it (it renders only online) and a warning."""
    from mlops.local.report import datadocs, web_assets

    if not data.data_docs:
        return []
    try:
        assets = web_assets.ensure(progress)
    except MlopsError as err:
        warnings.append(f"data docs stay as written (they need a network to render): {err}")
        return [
            {"step": d["step"], "index": d["path"] / "index.html", "offline": False} for d in data.data_docs
        ]
    sites = []
    for n, site in enumerate(data.data_docs):
        dest = out_dir / (
            site["step"] if n == 0 or data.data_docs[n - 1]["step"] != site["step"] else f"{site['step']}-{n}"
        )
        made = datadocs.make_offline(site["path"], dest, assets)
        for url in made.unvendored:
            warnings.append(f"data docs of {site['step']}: {url} still loads from the network")
        for url in made.integrity_mismatches:
            warnings.append(
                f"data docs of {site['step']}: the vendored copy of {url} is not the file it pins"
            )
        sites.append({"step": site["step"], "index": made.index, "offline": True, "pages": made.pages})
    return sites


def write_report(
    home: Home, execution_id: str, dest: Path | None = None, progress: Callable[[str], None] | None = None
) -> WrittenReport:
    """Write the report of ``execution_id`` (an id, unique prefix or ``latest``) and return where."""
    from jinja2 import Environment

    from mlops.definition import graph
    from mlops.local.report.curves import curves_svg

    data = collect(home, home.runs.resolve(execution_id))
    record = data.record
    exec_dir = home.execution_dir(record.id)
    path = Path(dest) if dest else exec_dir / "report.html"
    warnings: list[str] = []
    docs = _offline_docs(data, path.parent / "report-data-docs" if dest is None else path.with_suffix(".data-docs"),
                         progress, warnings)  # fmt: skip
    statuses = {s.record.name: str(s.record.status) for s in data.steps}
    cached = {s.record.name for s in data.steps if s.record.cache_hit}
    notes = {
        s.record.name: _duration(s.record.duration_s) for s in data.steps if s.record.duration_s is not None
    }
    dag = None
    try:
        dag = graph.svg(data.definition, statuses, cached, notes) if data.definition.get("Steps") else None
    except MlopsError as err:
        warnings.append(str(err))
    if dag is None:
        warnings.append("the DAG is not drawn: Graphviz (dot) is not installed")
    curves = [(s.record.name, curves_svg(s.record.name, s.history)) for s in data.steps if s.history]
    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)  # a key a version lacks is empty
    env.tests["matrix"] = lambda v: isinstance(v, Matrix)
    env.filters.update(number=_number, duration=_duration, tojson_pretty=lambda v: json.dumps(v, indent=2))
    env.globals.update(
        Matrix=Matrix,
        anchor=graph.anchor,
        flatten=flatten,
        relpath=lambda p: Path(os.path.relpath(p, path.parent)).as_posix(),
    )
    html = env.from_string(TEMPLATE.read_text()).render(
        data=data, record=record, dag=dag, curves=[c for c in curves if c[1]], docs=docs, warnings=warnings,
        summary={(r["step"], r["name"]): r for r in data.metric_summary},
        duration=_duration(_elapsed(record.started_at, record.ended_at)),
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, html)
    return WrittenReport(path=path, data_docs=[d["index"] for d in docs if d["offline"]], warnings=warnings)


def _elapsed(started: str | None, ended: str | None) -> float | None:
    from datetime import datetime

    if not started or not ended:
        return None
    return (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
