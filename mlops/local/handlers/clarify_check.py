"""ClarifyCheck (DATA_BIAS, MODEL_BIAS, MODEL_EXPLAINABILITY): Clarify's analysis of the step's dataset, its
drift check against a baseline, and the properties a ClarifyCheck step has on SageMaker.

On SageMaker the step is a processing job of the Clarify image (its request is ``Arguments``): the
``analysis_config`` input (``analysis_config.json``) and the ``dataset`` input go in, ``analysis.json`` comes
out under the one output. Locally the analysis runs in the executor (:mod:`mlops.local.clarify`): bias
metrics by their documented formulas and SHAP values from ``shap``'s KernelExplainer. For the model checks,
the model (the step's ``ModelName``, which the SDK takes out of ``predictor.model_name``; else that field)
is one a Model step created, served as a transform serves it (:mod:`mlops.local.runtime.scoring`: its own
runtime on ``predictor.initial_instance_count`` sandboxed hosts) for Clarify's shadow endpoint.

The baseline lifecycle (SageMaker's "baseline calculation, drift detection and lifecycle" for check steps):

- ``CalculatedBaselineConstraints``: the new ``analysis.json``, always;
- the previous baseline: ``SuppliedBaselineConstraints`` when set, else the constraints of the latest
  Approved version of ``ModelPackageGroupName`` in the local registry (its ``DriftCheckBaselines``:
  ``Bias.PreTrainingConstraints``, ``Bias.PostTrainingConstraints`` or ``Explainability.Constraints``);
- ``BaselineUsedForDriftCheckConstraints``: the calculated one when ``RegisterNewBaseline``, else the
  previous one (empty when there is none);
- unless ``SkipCheck``, the new analysis is checked against the previous baseline (:mod:`.drift`'s rules;
  a previous baseline must exist, as on SageMaker); violations go to ``constraint_violations.json`` beside
  ``analysis.json`` (property ``ViolationReport``) and fail the step, each violated metric named, unless
  ``FailOnViolation`` is false.

Not done locally: ``report.ipynb``/``report.pdf``, JSON and JSON Lines datasets, and the metrics and
methods :mod:`mlops.local.clarify.bias` and :mod:`mlops.local.clarify.explain` name as missing.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops.definition.expressions import resolve
from mlops.errors import MlopsError
from mlops.local import arns
from mlops.local.clarify import ClarifyError, analysis, bias, drift, explain
from mlops.local.handlers.jobs import _image_view, _one_line, job_name
from mlops.local.records import Outcome, StepStatus
from mlops.local.runtime.common import JobRequestError, s3_objects, s3_uri

log = logging.getLogger(__name__)

CHECK_TYPES = ("DATA_BIAS", "MODEL_BIAS", "MODEL_EXPLAINABILITY")
BASELINE_KEYS = {
    "DATA_BIAS": ("Bias", "PreTrainingConstraints"),
    "MODEL_BIAS": ("Bias", "PostTrainingConstraints"),
    "MODEL_EXPLAINABILITY": ("Explainability", "Constraints"),
}


class CheckFailed(MlopsError):
    """The step fails with this one line (a ClientError as SageMaker words a failed check job)."""


def _truthy(value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


class ClarifyCheckHandler:
    # a DATA_BIAS check runs no job; the model checks' servers refuse to start unsandboxed themselves
    needs_sandbox = False

    def describe(self, step, images):
        _, _, view = _image_view(step, "AppSpecification", "ImageUri")
        check_type = step.spec.get("CheckType")
        if check_type not in CHECK_TYPES:
            view.blockers.append(f"CheckType {check_type!r} is not one of {', '.join(CHECK_TYPES)}")
        view.runtime = {
            "DATA_BIAS": "Clarify's analysis in the executor: pre-training bias metrics",
            "MODEL_BIAS": "Clarify's analysis in the executor: post-training bias metrics of the model "
            "served by its own runtime on sandboxed hosts",
            "MODEL_EXPLAINABILITY": "Clarify's analysis in the executor: SHAP (shap's KernelExplainer) of the "
            "model served by its own runtime on sandboxed hosts",
        }.get(check_type, "Clarify's analysis in the executor")
        view.environment = "the executor's"
        return view

    def run(self, step, execution) -> Outcome:
        name = job_name(execution.execution_id, step.name)
        context = execution.context(name)
        request = resolve(step.arguments, context)
        spec = {
            key: resolve(step.spec.get(key), context)
            for key in (
                "CheckType", "SkipCheck", "FailOnViolation", "RegisterNewBaseline",
                "SuppliedBaselineConstraints", "ModelPackageGroupName", "ModelName",
            )
        }  # fmt: skip
        attempt = int(getattr(execution, "previous_attempts", {}).get(step.name) or 0) + 1
        job_dir = execution.home.execution_dir(execution.execution_id) / step.name / f"attempt-{attempt}"
        job_dir.mkdir(parents=True, exist_ok=True)
        execution.save(step.name, attempts=attempt, job_dir=str(job_dir))
        log_path = job_dir / "algo-1.log"
        fields = dict(log_paths=[str(log_path)], attempts=attempt, job_dir=str(job_dir))

        def say(line: str) -> None:
            with log_path.open("a") as f:
                f.write(line + "\n")
            execution.emit("log", step.name, message=f"[algo-1] {line}")

        try:
            props = self._check(step, execution, request, spec, name, job_dir, say)
        except (ClarifyError, JobRequestError, CheckFailed) as err:
            reason = str(err) if isinstance(err, CheckFailed) else f"ClientError: {_one_line(str(err))}"
            say(reason)
            if execution.stop.is_set():
                return Outcome(StepStatus.STOPPED, failure_reason="stopped", **fields)
            return Outcome.failed(reason, properties=getattr(err, "properties", None), **fields)
        return Outcome.succeeded(props, **fields)

    # ------------------------------------------------------------------------------------------------

    def _check(self, step, execution, request, spec, name, job_dir: Path, say) -> dict[str, Any]:
        store = execution.store
        check_type = spec["CheckType"]
        if check_type not in CHECK_TYPES:
            raise ClarifyError(f"CheckType {check_type!r} is not one of {', '.join(CHECK_TYPES)}")
        inputs = {i.get("InputName"): i for i in request.get("ProcessingInputs") or []}
        for wanted in ("analysis_config", "dataset"):
            if wanted not in inputs:
                raise ClarifyError(f"ProcessingInputs has no {wanted!r} input")
        outputs = (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        if len(outputs) != 1 or not (outputs[0].get("S3Output") or {}).get("S3Uri"):
            raise ClarifyError("ProcessingOutputConfig.Outputs must hold one S3Output (the analysis result)")
        out_uri = s3_uri(outputs[0]["S3Output"]["S3Uri"], "ProcessingOutputConfig.Outputs[0].S3Output.S3Uri")
        config_uri = s3_uri(inputs["analysis_config"]["S3Input"]["S3Uri"], "analysis_config S3Uri")
        config = analysis.AnalysisConfig.parse(json.loads(self._config_text(store, config_uri)))
        data_uri = s3_uri(inputs["dataset"]["S3Input"]["S3Uri"], "dataset S3Uri")
        objects = s3_objects(store, data_uri, "S3Prefix", "dataset")
        if not objects:
            raise ClarifyError(f"no S3 objects found under {data_uri}")
        frame = analysis.read_csv_objects([store.path(u) for u, _ in objects], config.headers)
        say(f"{check_type}: {len(frame)} rows, {frame.shape[1]} columns from {data_uri}")
        data = analysis.dataset(config, frame, needs_label=check_type != "MODEL_EXPLAINABILITY")

        result: dict[str, Any] = {"version": "1.0"}
        extra_files: dict[str, bytes] = {}
        if check_type == "DATA_BIAS":
            result["pre_training_bias_metrics"] = self._pre_training(config, data)
        else:
            model_name = spec.get("ModelName") or config.predictor.get("model_name")
            if not isinstance(model_name, str) or not model_name:
                raise ClarifyError(
                    "no model to score: the step names no ModelName (nor predictor.model_name)"
                )
            from mlops.local.handlers.transform import recorded_model
            from mlops.local.runtime.scoring import served_model

            model = recorded_model(execution.home, model_name)
            say(f"serving model {model_name} for the analysis")
            with served_model(
                model, store=store, job_dir=job_dir / "model-hosts",
                instance_type=config.predictor.get("instance_type"),
                instance_count=int(config.predictor.get("initial_instance_count") or 1),
                images=dict(execution.options.images), services=execution.services,
                on_log=lambda host, line: execution.emit("log", step.name, message=f"[model/{host}] {line}"),
                cancel=execution.stop,
            ) as invoke:  # fmt: skip
                predictor = explain.Predictor(invoke, config.predictor, config.dataset_type)
                features = self._features(data)
                if check_type == "MODEL_BIAS":
                    scores = predictor(features)
                    result["post_training_bias_metrics"] = self._post_training(config, data, scores)
                else:
                    shap_config = dict(config.methods.get("shap") or {})
                    if not shap_config:
                        raise ClarifyError("methods.shap is missing: MODEL_EXPLAINABILITY needs it")
                    baseline = self._shap_baseline(store, shap_config.get("baseline"), data)
                    section, local = explain.kernel_shap(
                        predictor, features, data.features, shap_config, baseline,
                        config.predictor.get("label_headers"),
                    )  # fmt: skip
                    result["explanations"] = {"kernel_shap": section}
                    if shap_config.get("save_local_shap_values", True):
                        extra_files["explanations_shap/out.csv"] = _local_shap_csv(local, data.features)
            say(f"the model answered {predictor.calls} request(s)")

        analysis_uri = out_uri.rstrip("/") + "/analysis.json"
        store.put_bytes(analysis_uri, json.dumps(result, indent=2).encode())
        store.put_bytes(out_uri.rstrip("/") + "/analysis_config.json", json.dumps(config.raw).encode())
        for rel, blob in extra_files.items():
            store.put_bytes(out_uri.rstrip("/") + "/" + rel, blob)
        say(f"analysis written to {analysis_uri}")

        skip = _truthy(spec.get("SkipCheck"), False)
        register = _truthy(spec.get("RegisterNewBaseline"), False)
        previous = self._previous_baseline(execution, spec, check_type)
        props: dict[str, Any] = {
            "CheckType": check_type,
            "CheckJobArn": arns.job_arn(request, "processing-job", name),
            "ModelPackageGroupName": spec.get("ModelPackageGroupName") or "",
            "SkipCheck": skip,
            "RegisterNewBaseline": register,
            "CalculatedBaselineConstraints": analysis_uri,
            "BaselineUsedForDriftCheckConstraints": analysis_uri if register else (previous or ""),
        }
        if skip:
            say("SkipCheck: the drift check is skipped")
            return props
        if not previous:
            group = spec.get("ModelPackageGroupName")
            where = f"model package group {group!r} has no Approved version with them" if group else (
                "no ModelPackageGroupName names a group to take them from"
            )  # fmt: skip
            raise CheckFailed(
                f"ClientError: {check_type} check: no baseline constraints to check against "
                f"(SuppliedBaselineConstraints is empty and {where}); run once with SkipCheck and "
                "RegisterNewBaseline true, or supply a baseline"
            )
        baseline = json.loads(self._read(store, previous, "the baseline constraints"))
        found = drift.violations(check_type, result, baseline)
        say(f"drift check against {previous}: {len(found)} violation(s)")
        if not found:
            return props
        report_uri = out_uri.rstrip("/") + "/constraint_violations.json"
        store.put_bytes(report_uri, json.dumps({"version": "1.0", "violations": found}, indent=2).encode())
        props["ViolationReport"] = report_uri
        for v in found:
            say("violation: " + drift.describe(v))
        if not _truthy(spec.get("FailOnViolation"), True):
            return props
        shown = "; ".join(drift.describe(v) for v in found[:5]) + (" ..." if len(found) > 5 else "")
        err = CheckFailed(
            f"ClientError: {check_type} drift check failed, {len(found)} violation(s) against {previous}: "
            f"{shown} (report: {report_uri})"
        )
        err.properties = props  # type: ignore[attr-defined]
        raise err

    # ------------------------------------------------------------------------------------------------

    @staticmethod
    def _read(store, uri: str, what: str) -> str:
        path = store.path(s3_uri(uri, what))
        if not path.is_file():
            raise ClarifyError(f"{what} {uri} is not in the local store")
        return path.read_text()

    def _config_text(self, store, uri: str) -> str:
        path = store.path(uri)
        if path.is_file():
            return path.read_text()
        return self._read(store, uri.rstrip("/") + "/analysis_config.json", "analysis_config.json")

    def _previous_baseline(self, execution, spec: Mapping[str, Any], check_type: str) -> str | None:
        supplied = spec.get("SuppliedBaselineConstraints")
        if isinstance(supplied, str) and supplied:
            return supplied
        group = spec.get("ModelPackageGroupName")
        if not group:
            return None
        first, second = BASELINE_KEYS[check_type]
        for package in reversed(execution.home.registry.list(group, "Approved")):
            request = package.get("request") or {}
            if isinstance(request, str):
                request = json.loads(request)
            uri = (((request.get("DriftCheckBaselines") or {}).get(first) or {}).get(second) or {}).get(
                "S3Uri"
            )
            if isinstance(uri, str) and uri:
                return uri
        return None

    @staticmethod
    def _features(data: analysis.Dataset) -> np.ndarray:
        frame = data.frame[data.features]
        bad = [c for c in data.features if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise ClarifyError(
                f"non-numeric feature column(s) {', '.join(bad[:5])}: not sent to a model locally"
            )
        return frame.to_numpy(dtype=float)

    @staticmethod
    def _groups(data: analysis.Dataset) -> np.ndarray | None:
        return data.frame[data.group].to_numpy() if data.group else None

    def _facets(self, config, data):
        if not config.facets:
            raise ClarifyError("analysis_config.json names no facet: bias metrics need one")
        return [
            (col, analysis.facet_groups(data.frame[col], facet))
            for col, facet in zip(data.facet_columns, config.facets, strict=True)
        ]

    def _label_positive(self, config, data) -> np.ndarray:
        if not config.label_values:
            raise ClarifyError("analysis_config.json label_values_or_threshold is missing")
        return analysis.member_mask(data.frame[data.label], config.label_values)

    def _pre_training(self, config, data) -> dict[str, Any]:
        methods = (config.methods.get("pre_training_bias") or {}).get("methods", "all")
        names = bias.selected(methods, bias.PRE_TRAINING, "pre_training_bias")
        if not data.group:
            names = [n for n in names if n != "CDDL"]  # CDDL needs a group_variable
        y, groups = self._label_positive(config, data), self._groups(data)
        return bias.report(
            data.label, config.label_values, self._facets(config, data), names, bias.PRE_TRAINING,
            lambda d: bias.pre_training(y, d, groups),
        )  # fmt: skip

    def _post_training(self, config, data, scores: np.ndarray) -> dict[str, Any]:
        methods = (config.methods.get("post_training_bias") or {}).get("methods", "all")
        names = bias.selected(methods, bias.POST_TRAINING, "post_training_bias")
        if not data.group:
            names = [n for n in names if n != "CDDPL"]
        y, groups = self._label_positive(config, data), self._groups(data)
        headers = config.predictor.get("label_headers")
        if scores.shape[1] > 1 and headers:
            predicted = pd.Series([headers[i] for i in scores.argmax(axis=1)])
            yhat = analysis.member_mask(predicted, config.label_values)
        elif config.probability_threshold is not None or config.predictor.get("probability") is not None:
            threshold = config.probability_threshold if config.probability_threshold is not None else 0.5
            yhat = scores[:, 0] > threshold
        else:
            label = data.frame[data.label]
            values = config.label_values
            if analysis.is_threshold(label, values):
                yhat = scores[:, 0] > float(values[0])
            else:
                yhat = analysis.member_mask(pd.Series(scores[:, 0]), values)
        return bias.report(
            data.label, config.label_values, self._facets(config, data), names, bias.POST_TRAINING,
            lambda d: bias.post_training(y, np.asarray(yhat, dtype=bool), d, groups),
        )  # fmt: skip

    def _shap_baseline(self, store, baseline: Any, data: analysis.Dataset) -> np.ndarray | None:
        if baseline is None or baseline == "":
            return None
        if isinstance(baseline, str):
            text = self._read(store, baseline, "methods.shap.baseline")
            return pd.read_csv(io.StringIO(text), header=None).to_numpy(dtype=float)
        if isinstance(baseline, list) and baseline:
            rows = [r if isinstance(r, list) else [r] for r in baseline]
            return np.asarray(rows, dtype=float)
        raise ClarifyError("methods.shap.baseline must be an S3 URI or a non-empty list of rows")


def _local_shap_csv(local: list[tuple[str, np.ndarray]], names: list[str]) -> bytes:
    columns, blocks = [], []
    for label, values in local:
        columns += names if len(local) == 1 else [f"{label}_{n}" for n in names]
        blocks.append(values)
    frame = pd.DataFrame(np.hstack(blocks), columns=columns)
    return frame.to_csv(index=False).encode()
