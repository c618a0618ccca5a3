"""RegisterModel: a model package version in the local registry (CreateModelPackage semantics)."""

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


class RegisterModelHandler:
    def run(self, step, execution) -> Outcome:
        request = resolve(step.arguments, execution.context())
        props = register_model(
            execution.home, request, read_text=execution.read_text, execution_id=execution.execution_id,
            step=step.name, prefix=execution.prefix,
        )  # fmt: skip
        return Outcome.succeeded(props)
