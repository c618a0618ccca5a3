"""Condition: all of ``Conditions`` must hold (SageMaker ANDs the list); the outcome picks a branch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops.definition.expressions import Context, evaluate
from mlops.errors import DefinitionError
from mlops.local.records import Outcome


def condition_outcome(arguments: Mapping[str, Any], ctx: Context) -> bool:
    """All of ``Conditions`` must hold (SageMaker ANDs the list)."""
    conditions = arguments.get("Conditions")
    if not isinstance(conditions, list):
        raise DefinitionError("Condition step needs a Conditions list")
    return all(evaluate(c, ctx) for c in conditions)


class ConditionHandler:
    def run(self, step, execution) -> Outcome:
        return Outcome.succeeded({"Outcome": condition_outcome(step.arguments, execution.context())})
