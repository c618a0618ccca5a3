"""One handler per step type, chosen by a table: the scheduler knows no step type.

A handler runs one step and returns an ``Outcome`` whose properties are what the step's Describe* call
would return. A new step type is one module with a class that has ``run(step, execution)`` and one line in
``BUILTIN`` (or a call to ``register`` from outside the toolkit).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from mlops.definition.model import Step
    from mlops.local.records import Outcome
    from mlops.local.scheduler import RunningExecution


class StepHandler(Protocol):
    def run(self, step: Step, execution: RunningExecution) -> Outcome: ...


BUILTIN: dict[str, str] = {
    "Processing": "mlops.local.handlers.jobs:ProcessingHandler",
    "Training": "mlops.local.handlers.jobs:TrainingHandler",
    "Condition": "mlops.local.handlers.condition:ConditionHandler",
    "Fail": "mlops.local.handlers.fail:FailHandler",
    "RegisterModel": "mlops.local.handlers.register_model:RegisterModelHandler",
    "Model": "mlops.local.handlers.model:ModelHandler",
    "CreateModel": "mlops.local.handlers.model:ModelHandler",
    "EndpointConfig": "mlops.local.handlers.endpoint_config:EndpointConfigHandler",
    "Endpoint": "mlops.local.handlers.endpoint:EndpointHandler",
    "Transform": "mlops.local.handlers.transform:TransformHandler",
    "Tuning": "mlops.local.handlers.tuning:TuningHandler",
    "Lambda": "mlops.local.handlers.lambda_step:LambdaHandler",
    "Callback": "mlops.local.handlers.callback:CallbackHandler",
    "QualityCheck": "mlops.local.handlers.quality_check:QualityCheckHandler",
    "ClarifyCheck": "mlops.local.handlers.clarify_check:ClarifyCheckHandler",
}
_REGISTERED: dict[str, StepHandler] = {}


def register(step_type: str, handler: StepHandler) -> None:
    """Serve ``step_type`` with ``handler`` (replaces a built-in one of that type)."""
    _REGISTERED[step_type] = handler


def unregister(step_type: str) -> None:
    _REGISTERED.pop(step_type, None)


def supported() -> list[str]:
    return sorted({*BUILTIN, *_REGISTERED})


def handler_for(step_type: str) -> StepHandler | None:
    if step_type in _REGISTERED:
        return _REGISTERED[step_type]
    target = BUILTIN.get(step_type)
    if target is None:
        return None
    module, _, name = target.partition(":")
    handler = getattr(importlib.import_module(module), name)()
    _REGISTERED[step_type] = handler
    return handler
