"""RegisterModel: a model package version in the local registry (CreateModelPackage semantics).

Beside the request, each version keeps its ``provenance``: the model artifact's content digest and, for the
training step whose ``ModelArtifacts.S3ModelArtifacts`` is the registered ``ModelDataUrl``, its input channels
(URI and the content digest of the objects under it in the local store at registration), job name and
hyperparameters. ``mlops models compare`` diffs it. A version whose artifact is the same (URL or digest) as an
existing version of the group is still registered, as SageMaker does, with a warning naming that version:
typically a cached re-run that registered the same model again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mlops.definition.expressions import resolve
from mlops.errors import DefinitionError, MlopsError
from mlops.local.records import Outcome
from mlops.local.state.home import Home

log = logging.getLogger(__name__)


def _metric_files(node: Any, read_text: Callable[[str], str], where: str = "ModelMetrics") -> dict[str, Any]:
    """Every ``{ContentType, S3Uri}`` leaf of ModelMetrics with the content it points at."""
    out: dict[str, Any] = {}
    if isinstance(node, Mapping):
        if isinstance(node.get("S3Uri"), str):
            # read_text maps the URI through the local store, which refuses keys that could leave it
            # (s3://b//etc/x, ..): the error names the field and the URI, and nothing is read.
            try:
                text = read_text(node["S3Uri"])
            except FileNotFoundError:
                raise
            except MlopsError as err:
                raise MlopsError(f"{where}.S3Uri: {err}") from None
            try:
                content: Any = json.loads(text)
            except ValueError:
                content = text
            out[where.removeprefix("ModelMetrics.")] = {
                "S3Uri": node["S3Uri"],
                "ContentType": node.get("ContentType"),
                "Content": content,
            }
        else:
            for key, value in node.items():
                out.update(_metric_files(value, read_text, f"{where}.{key}"))
    return out


def register_model(
    home: Home,
    request: Mapping[str, Any],
    *,
    read_text: Callable[[str], str],
    execution_id: str,
    step: str,
    prefix: str,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add a model package version to the local registry; returns the step's properties."""
    group = request.get("ModelPackageGroupName")
    if not group or not isinstance(group, str):
        raise DefinitionError(f"step {step}: RegisterModel needs ModelPackageGroupName")
    spec = request.get("InferenceSpecification") or {}
    containers = spec.get("Containers") or [{}]
    try:
        metrics = _metric_files(request.get("ModelMetrics") or {}, read_text)
    except FileNotFoundError as err:
        raise MlopsError(f"step {step}: model metrics file not found: {err}") from None
    except MlopsError as err:
        raise MlopsError(f"step {step}: {err}") from None
    status = request.get("ModelApprovalStatus") or "PendingManualApproval"
    extra = {"provenance": provenance} if provenance is not None else {}
    row = home.registry.register(
        group,
        f"{prefix}:model-package",
        approval_status=status,
        model_data_url=containers[0].get("ModelDataUrl"),
        image=containers[0].get("Image"),
        content_types=spec.get("SupportedContentTypes"),
        response_types=spec.get("SupportedResponseMIMETypes"),
        inference_instances=spec.get("SupportedRealtimeInferenceInstanceTypes"),
        transform_instances=spec.get("SupportedTransformInstanceTypes"),
        metrics=metrics,
        execution_id=execution_id,
        step=step,
        description=request.get("ModelPackageDescription"),
        request=dict(request),
        **extra,
    )
    log.info("registered %s (%s)", row["arn"], status)
    return {
        "ModelPackageArn": row["arn"],
        "ModelPackageGroupName": group,
        "ModelPackageVersion": row["version"],
        "ModelApprovalStatus": status,
        "ModelPackageStatus": "Completed",
        "CreationTime": row["created_at"],
    }


def _digest(store, uri: str | None) -> str | None:
    """sha256 of the objects under ``uri`` in the local store; None when nothing is there (or not S3)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        return None
    try:
        return store.digest(uri) if store.relative_keys(uri) else None
    except (OSError, MlopsError):  # a URI the store refuses records no digest; it fails no registration
        return None


def training_provenance(store, steps: Mapping[str, Mapping[str, Any]], model_data_url: str | None):
    """The training step whose artifact is ``model_data_url``: ``(step name, what it read and was given)``."""
    for name, props in steps.items():
        artifact = (props.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        if not model_data_url or artifact != model_data_url or "InputDataConfig" not in props:
            continue
        channels = {}
        for channel in props.get("InputDataConfig") or []:
            source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
            uri = source.get("S3Uri")
            channels[channel.get("ChannelName") or "?"] = {"uri": uri, "sha256": _digest(store, uri)}
        return name, {
            "step": name,
            "job_name": props.get("TrainingJobName"),
            "hyperparameters": dict(props.get("HyperParameters") or {}),
            "input_data": channels,
        }
    return None, None


def identical_version(home: Home, group: str, model_data_url: str | None, digest: str | None):
    """The latest version of ``group`` with the same model artifact (same URL, or same content digest)."""
    same = [
        row
        for row in home.registry.list(group=group)
        if (model_data_url and row.get("model_data_url") == model_data_url)
        or (digest and (row.get("provenance") or {}).get("model_data_sha256") == digest)
    ]
    return same[-1] if same else None


class RegisterModelHandler:
    def run(self, step, execution) -> Outcome:
        request = resolve(step.arguments, execution.context())
        group = request.get("ModelPackageGroupName")
        containers = (request.get("InferenceSpecification") or {}).get("Containers") or [{}]
        url = containers[0].get("ModelDataUrl") if isinstance(containers[0], Mapping) else None
        with execution.lock:
            steps = dict(execution.properties)
        train_step, training = training_provenance(execution.store, steps, url)
        digest = _digest(execution.store, url)
        run = execution.home.runs.get(execution.execution_id) or {}
        provenance = {"model_data_sha256": digest, "training": training, "source": run.get("code_source")}
        before = identical_version(execution.home, group, url, digest) if isinstance(group, str) else None
        props = register_model(
            execution.home, request, read_text=execution.read_text, execution_id=execution.execution_id,
            step=step.name, prefix=execution.prefix, provenance=provenance,
        )  # fmt: skip
        if before is not None:
            record = execution.records.get(train_step) if train_step else None
            why = (
                f"a cache hit of {train_step} re-registered it"
                if record is not None and record.cache_hit
                else "the same artifact was registered again"
            )
            message = (
                f"{group}/{props['ModelPackageVersion']} is identical to {group}/{before['version']} "
                f"(same model artifact): {why}"
            )
            log.warning("%s", message)
            execution.home.events.add(execution.execution_id, "warning", step.name, message)
        return Outcome.succeeded(props)
