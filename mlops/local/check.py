"""What a run of a definition would do, before anything runs: per step its type, image, the local runtime and
environment that will serve it, and every blocker at once (``mlops run --check``).

``mlops run`` asks the same question and refuses to start on the first blocker; ``--check`` lists them all.
A handler may describe its steps (``describe(step, images) -> StepView``; ``images`` is config
``local.images``); one that does not is described by type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops.definition import preflight
from mlops.definition.model import Definition, Step, parse
from mlops.errors import DefinitionError
from mlops.local import handlers


@dataclass
class StepView:
    """One step as this machine will run it."""

    name: str
    type: str
    image: str = ""
    runtime: str = ""
    environment: str = ""
    blockers: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "image": self.image,
            "runtime": self.runtime,
            "environment": self.environment,
            "blockers": self.blockers,
        }


@dataclass
class CheckResult:
    model: Definition | None
    steps: list[StepView]
    blockers: list[str]  # "step X: why" for every step, then whole-definition ones

    @property
    def runnable(self) -> bool:
        return not self.blockers


def _view(step: Step, images: Mapping[str, Any], settings: Mapping[str, Any]) -> StepView:
    handler = handlers.handler_for(step.type)
    if handler is None:
        return StepView(
            step.name,
            step.type,
            runtime="(none)",
            blockers=[
                f"type {step.type[:80]} is not supported by the local executor "
                f"(supported: {', '.join(handlers.supported())})"
            ],
        )
    describe = getattr(handler, "describe", None)
    if describe is None:
        return StepView(step.name, step.type, runtime=f"local {step.type} handler")
    # a handler that needs more of the run's settings names them (``describe_settings``)
    extra = {k: settings.get(k) for k in getattr(handler, "describe_settings", ())}
    view = describe(step, images, **extra)
    view.name, view.type = step.name, step.type
    return view


def check(
    definition: Mapping[str, Any],
    images: Mapping[str, Any] | None = None,
    *,
    lambda_functions: Mapping[str, str] | None = None,
) -> CheckResult:
    """Every blocker of ``definition``: a definition that does not parse or fails preflight gives one.
    ``images``: config ``local.images`` (which environment stands in for which image);
    ``lambda_functions``: config ``local.lambda_functions`` (which handler serves which Lambda function)."""
    try:
        model = parse(definition)
        preflight.check(model)
    except DefinitionError as err:
        return CheckResult(None, [], [str(err)])
    settings = {"lambda_functions": dict(lambda_functions or {})}
    views = [_view(step, images or {}, settings) for step in model.steps.values()]
    blockers = [f"step {v.name}: {b}" for v in views for b in v.blockers]
    return CheckResult(model, views, blockers)


def describe_environment(view: StepView, images: Mapping[str, Any]) -> None:
    """Fill in the environment standing in for ``view.image`` and what would stop it (nothing is built)."""
    from mlops.local.images import environments

    if not view.image or view.image.startswith("("):
        view.environment = "decided at run time"
        return
    try:
        rules = environments.rules_from_config(images)
        view.environment = environments.choose(view.image, rules).summary()
        view.blockers += environments.check(view.image, rules)
    except environments.ImageEnvError as err:
        view.blockers.append(str(err))
