"""Transform (CreateTransformJob): a batch transform of the model a Model step (or an earlier run) created."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlops.local.handlers.jobs import JobHandler, _image_view
from mlops.local.runtime.common import JobRequestError


def recorded_model(home, name: str) -> dict[str, Any]:
    """The CreateModel request of the newest model named ``name`` in the local home; a container that
    names a ModelPackageName becomes that package's container (image, model data, environment)."""
    model = next((m for m in reversed(home.registry.models()) if m["name"] == name), None)
    if model is None:
        raise JobRequestError(f"ModelName {name!r}: no such model was created in {home.root}")
    request = model["request"] if isinstance(model["request"], dict) else json.loads(model["request"])
    return {"ModelName": name, **_from_package(home, request)}


def _from_package(home, request: dict[str, Any]) -> dict[str, Any]:
    containers = request.get("Containers") or []
    container = request.get("PrimaryContainer") or (containers[0] if len(containers) == 1 else None)
    arn = container.get("ModelPackageName") if isinstance(container, dict) else None
    if not arn:
        return request
    package = next((p for p in home.registry.list() if p["arn"] == arn), None)
    if package is None:
        raise JobRequestError(f"model package {arn} is not in the local registry ({home.root})")
    if package["approval_status"] != "Approved":  # as the Endpoint step: only what a reviewer approved
        raise JobRequestError(f"model package {arn} is {package['approval_status']}, not Approved")
    spec = ((package.get("request") or {}).get("InferenceSpecification") or {}).get("Containers") or [{}]
    resolved = {
        "Image": spec[0].get("Image") or package.get("image"),
        "ModelDataUrl": spec[0].get("ModelDataUrl") or package.get("model_data_url"),
        "Environment": {**(spec[0].get("Environment") or {}), **(container.get("Environment") or {})},
    }
    rest = {k: v for k, v in request.items() if k not in ("Containers", "PrimaryContainer")}
    return {**rest, "PrimaryContainer": {k: v for k, v in resolved.items() if v}}


class TransformHandler(JobHandler):
    kind = "Transform"

    def describe(self, step, images):
        args, _, view = _image_view(step, "TransformResources", "InstanceType")
        view.image = ""
        name = args.get("ModelName")
        shown = name if isinstance(name, str) else "a Model step's ModelName"
        view.runtime = f"batch transform served by the runtime of {shown} (its image, decided at run time)"
        return view

    def runner_for(self, execution):
        from mlops.local.runtime.transform import run_transform_job

        def run(request: dict[str, Any], **kwargs: Any):
            name = request.get("ModelName")
            if not isinstance(name, str) or not name:
                raise JobRequestError("ModelName is missing")
            return run_transform_job(request, model=recorded_model(execution.home, name), **kwargs)

        return run

    def output_uris(self, props: Mapping[str, Any]) -> list[str]:
        uri = (props.get("TransformOutput") or {}).get("S3OutputPath")
        return [uri] if uri else []
