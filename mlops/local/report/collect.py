"""What a report shows, read from the local home: the execution and its steps, logs, metric history,
property files (the evaluation report), great-expectations results and data docs, and the model versions
the execution registered with their lineage.

Nothing here knows the project's steps: an evaluation report is whatever a step's ``PropertyFiles`` name,
a data-quality result is any great-expectations validation result among a step's outputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError
from mlops.local.records import ExecutionRecord, StepRecord
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home
from mlops.local.state.lineage import lineage

LOG_TAIL_LINES = 40
MAX_JSON_BYTES = 20 * 1024 * 1024
MAX_JSON_FILES = 200


@dataclass
class LogView:
    label: str
    path: Path
    tail: list[str]


@dataclass
class StepView:
    record: StepRecord
    error_line: str | None = None  # the first real error line of its logs, where it failed
    logs: list[LogView] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Validation:
    """One great-expectations validation result: its name and counts, and what failed."""

    step: str
    name: str
    success: bool
    evaluated: int
    successful: int
    failed: list[dict[str, Any]]


@dataclass
class ReportData:
    record: ExecutionRecord
    definition: dict[str, Any]
    source: dict[str, Any] | None
    steps: list[StepView]
    property_files: list[dict[str, Any]]  # {step, name, uri, content}
    validations: list[Validation]
    data_docs: list[dict[str, Any]]  # {step, path}: sites under the step's outputs, as the job wrote them
    versions: list[dict[str, Any]]  # the registry rows of what the execution registered, with lineage
    events: list[dict[str, Any]]
    metric_summary: list[dict[str, Any]]


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _error_line(logs: list[LogView]) -> str | None:
    from mlops.local.runtime.common import first_error_line

    for log in logs:
        line = first_error_line(log.tail)
        if line:
            return line
    return None


def _outputs(step: StepRecord) -> list[str]:
    """The S3 URIs a step wrote: processing outputs, a training job's model artifact and output path."""
    props = step.properties or {}
    uris = [
        (out.get("S3Output") or {}).get("S3Uri")
        for out in (props.get("ProcessingOutputConfig") or {}).get("Outputs") or []
    ]
    uris.append((props.get("OutputDataConfig") or {}).get("S3OutputPath"))
    return [u for u in uris if isinstance(u, str) and u.startswith("s3://")]


def _store_dir(store: S3Store, uri: str) -> Path | None:
    try:
        path = store.path(uri)
    except MlopsError:
        return None
    return path if path.is_dir() else None


def _ge_results(doc: Any, depth: int = 0) -> list[dict[str, Any]]:
    """Validation results anywhere in a JSON document (GE's ``ExpectationSuiteValidationResult`` shape)."""
    if depth > 4:
        return []
    if isinstance(doc, dict):
        stats = doc.get("statistics")
        if (
            isinstance(doc.get("results"), list)
            and isinstance(stats, dict)
            and "evaluated_expectations" in stats
        ):
            return [doc]
        return [r for v in doc.values() for r in _ge_results(v, depth + 1)]
    if isinstance(doc, list):
        return [r for v in doc[:50] for r in _ge_results(v, depth + 1)]
    return []


def _validation(step: str, result: dict[str, Any], fallback: str) -> Validation:
    meta = result.get("meta") or {}
    batch = (meta.get("active_batch_definition") or {}).get("data_asset_name")
    name = result.get("suite_name") or meta.get("expectation_suite_name") or fallback
    if batch and batch not in name:
        name = f"{name} ({batch})"
    failed = []
    for r in result["results"]:
        if r.get("success") is False:
            config = r.get("expectation_config") or {}
            kwargs = {k: v for k, v in (config.get("kwargs") or {}).items() if k != "batch_id"}
            observed = (r.get("result") or {}).get("observed_value")
            failed.append({"type": config.get("type") or config.get("expectation_type"), "kwargs": kwargs,
                           "observed": observed})  # fmt: skip
    stats = result["statistics"]
    return Validation(
        step=step,
        name=name,
        success=bool(result.get("success")),
        evaluated=int(stats.get("evaluated_expectations") or 0),
        successful=int(stats.get("successful_expectations") or 0),
        failed=failed,
    )


def _job_outputs(step: StepRecord, raw: dict[str, Any]) -> list[Path]:
    """A processing job's output directories as its hosts left them (what a failed job never uploaded)."""
    if not step.job_dir:
        return []
    outputs = ((raw.get("Arguments") or {}).get("ProcessingOutputConfig") or {}).get("Outputs") or []
    local = [(o.get("S3Output") or {}).get("LocalPath") for o in outputs]
    dirs = []
    for host in sorted(Path(step.job_dir).glob("algo-*")):
        for path in local:
            if isinstance(path, str) and path.startswith("/opt/ml/") and ".." not in path:
                candidate = host / "ml" / path[len("/opt/ml/") :]
                if candidate.is_dir():
                    dirs.append(candidate)
    return dirs


def _scan_outputs(
    step: StepRecord, raw: dict[str, Any], store: S3Store
) -> tuple[list[Validation], list[dict[str, Any]]]:
    """Validation results and data docs among what the step wrote: its uploaded outputs, else (a failed
    job uploads nothing) the output directories of its job."""
    from mlops.local.report.datadocs import find_sites

    validations: list[Validation] = []
    sites: list[dict[str, Any]] = []
    tops = [t for t in (_store_dir(store, uri) for uri in _outputs(step)) if t is not None]
    if not tops:
        tops = _job_outputs(step, raw)
    for top in tops:
        sites += [{"step": step.name, "path": site} for site in find_sites(top)]
        for n, path in enumerate(sorted(top.rglob("*.json"))):
            if n >= MAX_JSON_FILES or "data_docs" in path.parts:
                break
            try:
                if path.stat().st_size > MAX_JSON_BYTES:
                    continue
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for i, result in enumerate(_ge_results(doc)):
                validations.append(_validation(step.name, result, f"{path.stem}[{i}]"))
    return validations, sites


def _property_files(definition: dict[str, Any], steps: dict[str, StepRecord], store: S3Store) -> list[dict]:
    found = []
    for raw in _raw_steps(definition).values():
        record = steps.get(raw.get("Name"))
        if record is None or not record.properties:
            continue
        outputs = {
            o.get("OutputName"): (o.get("S3Output") or {}).get("S3Uri")
            for o in (record.properties.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        }
        for pf in raw.get("PropertyFiles") or []:
            base = outputs.get(pf.get("OutputName"))
            if not isinstance(base, str):
                continue
            uri = base.rstrip("/") + "/" + str(pf.get("FilePath", "")).lstrip("/")
            try:
                content = json.loads(store.path(uri).read_text())
            except (OSError, ValueError, MlopsError):
                continue
            found.append(
                {"step": record.name, "name": pf.get("PropertyFileName"), "uri": uri, "content": content}
            )
    return found


def _raw_steps(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each step's JSON object by name, those inside a Condition's branches too."""
    from mlops.definition.model import parse

    if not definition.get("Steps"):
        return {}
    try:
        return {name: step.spec for name, step in parse(definition).steps.items()}
    except MlopsError:
        return {s.get("Name"): s for s in definition.get("Steps") or [] if isinstance(s, dict)}


def collect(home: Home, execution_id: str) -> ReportData:
    record = ExecutionRecord.load(home, execution_id)
    row = home.runs.get(record.id) or {}
    definition = row.get("definition") or {}
    if isinstance(definition, str):
        definition = json.loads(definition)
    store = S3Store(home.s3_root)
    raw_steps = _raw_steps(definition)
    views, validations, sites = [], [], []
    for step in record.steps.values():
        logs = [LogView(label=Path(p).stem, path=Path(p), tail=_tail(Path(p))) for p in step.log_paths]
        view = StepView(record=step, logs=logs, history=home.runs.metric_history(record.id, step.name))
        if str(step.status) == "Failed":
            view.error_line = _error_line(logs)
        views.append(view)
        found, step_sites = _scan_outputs(step, raw_steps.get(step.name) or {}, store)
        validations += found
        sites += step_sites
    versions = [
        {**p, "lineage": lineage(home, p)} for p in home.registry.list() if p.get("execution_id") == record.id
    ]
    return ReportData(
        record=record,
        definition=definition,
        source=row.get("code_source"),
        steps=views,
        property_files=_property_files(definition, record.steps, store),
        validations=validations,
        data_docs=sites,
        versions=versions,
        events=home.events.for_execution(record.id),
        metric_summary=home.runs.metric_summary(record.id),
    )
