"""QualityCheck: a Model Monitor baselining job (DATA_QUALITY or MODEL_QUALITY) and the drift check.

The step's ``Arguments`` are the processing job SageMaker runs on the model-monitor analyzer image; the
image does not run here, :mod:`mlops.local.monitor` computes what it would (in the executor, on the
dataset in the local store). As SageMaker does (``pipelines-quality-clarify-baseline-lifecycle``):

- the new baseline (``statistics.json``, ``constraints.json``) is always calculated, under the job's output
  (``Environment.output_path``'s ``S3Uri``): ``CalculatedBaselineStatistics`` / ``...Constraints``;
- the baseline to check against is ``SuppliedBaselineStatistics`` / ``...Constraints`` when given, else the
  ``DriftCheckBaselines`` (``ModelDataQuality`` / ``ModelQuality``) of the latest Approved version of
  ``ModelPackageGroupName`` in the local registry;
- unless ``SkipCheck``, the dataset is checked against it; violations go to ``constraint_violations.json``
  beside the baseline and, with ``FailOnViolation`` (the default), fail the step naming them. With no
  baseline to check against the step fails too (set ``SkipCheck`` on a first run);
- ``BaselineUsedForDriftCheck*`` is the new baseline with ``RegisterNewBaseline``, else the one checked
  against (absent when there is none).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops.definition.expressions import is_expression, resolve
from mlops.errors import MlopsError
from mlops.local.handlers.jobs import _image_view, job_name
from mlops.local.records import Outcome

log = logging.getLogger(__name__)

CHECK_TYPES = {"DATA_QUALITY": "ModelDataQuality", "MODEL_QUALITY": "ModelQuality"}
SCRIPTS = ("record_preprocessor_script", "post_analytics_processor_script")
STEP_FIELDS = (
    "CheckType", "SkipCheck", "FailOnViolation", "RegisterNewBaseline", "ModelPackageGroupName",
    "SuppliedBaselineStatistics", "SuppliedBaselineConstraints",
)  # fmt: skip


class QualityCheckError(MlopsError):
    pass


def _flag(value: Any, name: str, default: bool) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise QualityCheckError(f"{name} must be true or false, got {json.dumps(value)[:60]}")


def _path_for(entries: list[Any], local: str, kind: str) -> tuple[str, str] | None:
    """``(name, S3Uri)`` of the input/output whose LocalPath is (or holds) ``local``."""
    key = "S3Input" if kind == "input" else "S3Output"
    for entry in entries:
        if not isinstance(entry, Mapping):
            continue
        part = entry.get(key) or {}
        path = str(part.get("LocalPath") or "").rstrip("/")
        if path and (local.rstrip("/") == path or local.startswith(path + "/")):
            rest = local[len(path) :].strip("/")
            uri = str(part.get("S3Uri") or "")
            name = str(entry.get("InputName" if kind == "input" else "OutputName") or "")
            return name, (uri.rstrip("/") + "/" + rest if rest else uri)
    return None


def registered_baseline(home, group: Any, section: str) -> tuple[str | None, str | None, str] | None:
    """``(statistics URI, constraints URI, package ARN)`` of the latest Approved version of ``group``,
    when it has ``DriftCheckBaselines.<section>``."""
    if not isinstance(group, str) or not group:
        return None
    approved = [p for p in home.registry.list(group=group) if p.get("approval_status") == "Approved"]
    if not approved:
        return None
    latest = approved[-1]
    request = latest.get("request") or {}
    request = json.loads(request) if isinstance(request, str) else request
    part = (request.get("DriftCheckBaselines") or {}).get(section) or {}
    stats, cons = (part.get("Statistics") or {}).get("S3Uri"), (part.get("Constraints") or {}).get("S3Uri")
    return (stats, cons, latest["arn"]) if cons else None


def _bad_check_type(check: Any) -> str:
    if check is None:
        return "CheckType is missing (DATA_QUALITY or MODEL_QUALITY)"
    return f"CheckType {json.dumps(check)[:60]} is not DATA_QUALITY or MODEL_QUALITY"


def _summary(violation: Mapping[str, Any]) -> str:
    if "feature_name" in violation:
        return f"{violation['constraint_check_type']} on feature {violation['feature_name']}: {violation['description']}"
    return f"{violation['constraint_check_type']} on metric {violation['metric_name']}: {violation['description']}"


class QualityCheckHandler:
    def describe(self, step, images):
        from mlops.local.monitor import MonitorError
        from mlops.local.monitor.dataset import parse_format
        from mlops.local.monitor.model_quality import problem_key

        args, _, view = _image_view(step, "AppSpecification", "ImageUri")
        check = step.spec.get("CheckType")
        view.runtime = "the local Model Monitor analyzer (pandas, in the executor)"
        view.environment = "the toolkit's own"
        if is_expression(check):
            view.blockers.append("CheckType must be DATA_QUALITY or MODEL_QUALITY, not an expression")
        elif check not in CHECK_TYPES:
            view.blockers.append(_bad_check_type(check))
        else:
            view.runtime += f": {check.lower().replace('_', ' ')}"
        env = args.get("Environment") if isinstance(args.get("Environment"), Mapping) else {}
        try:
            if "dataset_format" not in env:
                view.blockers.append("Environment.dataset_format is missing")
            elif not is_expression(env["dataset_format"]):
                parse_format(env["dataset_format"])
            if check == "MODEL_QUALITY" and not is_expression(env.get("problem_type")):
                problem_key(env.get("problem_type"))
        except MonitorError as err:
            view.blockers.append(str(err))
        if "dataset_source" not in env:
            view.blockers.append("Environment.dataset_source is missing")
        for script in SCRIPTS:
            if env.get(script):
                view.blockers.append(
                    f"Environment.{script}: the analyzer's custom scripts do not run locally"
                )
        return view

    def run(self, step, execution) -> Outcome:
        from mlops.local.monitor import MonitorError

        name = job_name(execution.execution_id, step.name)
        ctx = execution.context(name)
        request = resolve(step.arguments, ctx)
        fields = {k: resolve(step.spec.get(k), ctx) for k in STEP_FIELDS}
        attempt = int(getattr(execution, "previous_attempts", {}).get(step.name) or 0) + 1
        job_dir = execution.home.execution_dir(execution.execution_id) / step.name / f"attempt-{attempt}"
        job_dir.mkdir(parents=True, exist_ok=True)
        execution.save(step.name, attempts=attempt, job_dir=str(job_dir))
        log_path = job_dir / "analyzer.log"
        lines: list[str] = []

        def say(line: str) -> None:
            lines.append(line)
            execution.emit("log", step.name, message=f"[algo-1] {line}")
            log_path.write_text("\n".join(lines) + "\n")

        kept = dict(log_paths=[str(log_path)], attempts=attempt, job_dir=str(job_dir))
        try:
            props, failure = self._check(step, execution, request, fields, name, say)
        except (QualityCheckError, MonitorError) as err:
            say(f"ClientError: {err}")
            return Outcome.failed(str(err), **kept)
        if failure:
            say(failure)
            return Outcome.failed(failure, properties=props, **kept)
        return Outcome.succeeded(props, **kept)

    def _check(self, step, execution, request, fields, name, say) -> tuple[dict[str, Any], str | None]:
        from mlops.local.monitor import data_quality, dataset, model_quality

        check = fields["CheckType"]
        if check not in CHECK_TYPES:
            raise QualityCheckError(_bad_check_type(check))
        skip = _flag(fields["SkipCheck"], "SkipCheck", False)
        fail_on_violation = _flag(fields["FailOnViolation"], "FailOnViolation", True)
        register_new = _flag(fields["RegisterNewBaseline"], "RegisterNewBaseline", False)
        env = request.get("Environment") or {}
        for script in SCRIPTS:
            if env.get(script):
                raise QualityCheckError(
                    f"Environment.{script}: the analyzer's custom scripts do not run locally"
                )
        kind, options = dataset.parse_format(env.get("dataset_format"))
        source = env.get("dataset_source")
        if not isinstance(source, str) or not source:
            raise QualityCheckError("Environment.dataset_source is missing")
        found = _path_for(request.get("ProcessingInputs") or [], source, "input")
        if found is None:
            raise QualityCheckError(
                f"Environment.dataset_source {source!r} is the LocalPath of no ProcessingInputs entry"
            )
        input_name, data_uri = found
        outputs = (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        out = _path_for(outputs, str(env.get("output_path") or "/opt/ml/processing/output"), "output")
        if out is None or not out[1]:
            raise QualityCheckError(
                f"Environment.output_path {env.get('output_path')!r} is the LocalPath of no ProcessingOutputConfig output"
            )
        out_uri = out[1].rstrip("/")
        store = execution.store
        try:
            objects = store.relative_keys(data_uri)
        except MlopsError as err:
            raise QualityCheckError(f"ProcessingInputs {input_name}: {err}") from None
        if not objects:
            raise QualityCheckError(
                f"dataset missing: no object under {data_uri} (ProcessingInputs {input_name}, the dataset_source)"
            )
        frame = dataset.read([Path(store.path(uri)) for uri, _ in objects], kind, options)
        if frame.empty:
            raise QualityCheckError(f"dataset missing: the objects under {data_uri} hold no rows")
        say(f"{check}: {len(frame)} rows, {frame.shape[1]} columns from {data_uri} ({kind})")

        if check == "DATA_QUALITY":
            features = data_quality.profile(frame)
            stats = data_quality.statistics(features)
            cons = data_quality.constraints(features)
        else:
            stats = model_quality.statistics(frame, env)
            cons = model_quality.constraints(stats)
        stats_uri, cons_uri = f"{out_uri}/statistics.json", f"{out_uri}/constraints.json"
        store.put_bytes(stats_uri, json.dumps(stats, indent=2).encode())
        store.put_bytes(cons_uri, json.dumps(cons, indent=2).encode())
        say(f"baseline written: {stats_uri}, {cons_uri}")

        section = CHECK_TYPES[check]
        supplied_stats = fields["SuppliedBaselineStatistics"] or None
        supplied_cons = fields["SuppliedBaselineConstraints"] or None
        if supplied_stats or supplied_cons:
            previous: tuple[str | None, str | None, str] | None = (
                supplied_stats, supplied_cons, "SuppliedBaselineStatistics/Constraints",
            )  # fmt: skip
        else:
            previous = registered_baseline(execution.home, fields["ModelPackageGroupName"], section)
        props: dict[str, Any] = {
            "CheckType": check,
            "CheckJobArn": f"{execution.prefix}:processing-job/{name.lower()}",
            "ModelPackageGroupName": fields["ModelPackageGroupName"],
            "SkipCheck": skip,
            "RegisterNewBaseline": register_new,
            "CalculatedBaselineStatistics": stats_uri,
            "CalculatedBaselineConstraints": cons_uri,
        }
        used = (stats_uri, cons_uri) if register_new else (previous[:2] if previous else None)
        if used is not None:
            props["BaselineUsedForDriftCheckStatistics"] = used[0]
            props["BaselineUsedForDriftCheckConstraints"] = used[1]
        if skip:
            say("SkipCheck: no drift check")
            return props, None
        if previous is None or not previous[1]:
            group = fields["ModelPackageGroupName"]
            raise QualityCheckError(
                "no baseline to check against: SuppliedBaselineConstraints is empty and model package group "
                f"{group!r} has no Approved version with DriftCheckBaselines.{section} "
                "(set SkipCheck on a first run)"
            )
        base_stats_uri, base_cons_uri, origin = previous
        base_cons = self._baseline(execution, base_cons_uri, origin)
        say(f"checking against {base_cons_uri} ({origin})")
        if check == "DATA_QUALITY":
            base_stats = self._baseline(execution, base_stats_uri, origin) if base_stats_uri else None
            found_violations = data_quality.violations(features, base_cons, base_stats)
        else:
            found_violations = model_quality.violations(stats, base_cons)
        report = f"{out_uri}/constraint_violations.json"
        store.put_bytes(report, json.dumps({"violations": found_violations}, indent=2).encode())
        props["ViolationReport"] = report
        if not found_violations:
            say("no violations")
            return props, None
        shown = "; ".join(_summary(v) for v in found_violations[:3])
        more = f"; and {len(found_violations) - 3} more" if len(found_violations) > 3 else ""
        message = f"ClientError: Quality check failed: {shown}{more} (violation report: {report})"
        if not fail_on_violation:
            say(f"FailOnViolation is false: {message}")
            execution.home.events.add(execution.execution_id, "warning", step.name, message)
            return props, None
        return props, message

    @staticmethod
    def _baseline(execution, uri: Any, origin: str) -> dict[str, Any]:
        """A baseline file's JSON; ``origin``: where its URI came from (the step's field, or a package)."""
        if not isinstance(uri, str):
            raise QualityCheckError(f"{origin}: expected an S3 URI, got {json.dumps(uri)[:60]}")
        try:
            value = execution.read_json(uri)
        except MlopsError as err:
            raise QualityCheckError(f"baseline from {origin}: {err}") from None
        if not isinstance(value, dict):
            raise QualityCheckError(f"baseline {uri}: not a JSON object")
        return value
