"""Model (CreateModel): the request is recorded; SageMaker names the model when the step does not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops.definition.expressions import resolve
from mlops.local.records import Outcome
from mlops.local.state.home import Home, now


def create_model(
    home: Home, request: Mapping[str, Any], *, execution_id: str, step: str, prefix: str
) -> dict[str, Any]:
    """Record a CreateModel request; SageMaker names the model when the step does not."""
    name = request.get("ModelName") or f"pipelines-{execution_id}-{step}"[:63].rstrip("-")
    arn = f"{prefix}:model/{name.lower()}"
    home.registry.record_model(name, arn, execution_id, step, dict(request))
    return {"ModelName": name, "ModelArn": arn, "CreationTime": now()}


class ModelHandler:
    def run(self, step, execution) -> Outcome:
        request = resolve(step.arguments, execution.context())
        props = create_model(
            execution.home,
            request,
            execution_id=execution.execution_id,
            step=step.name,
            prefix=execution.prefix,
        )
        return Outcome.succeeded(props)
