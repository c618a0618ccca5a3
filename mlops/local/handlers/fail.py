"""Fail: the execution ends Failed with the step's (resolved) ErrorMessage."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlops.definition.expressions import Context, resolve
from mlops.local.records import Outcome


def fail_message(arguments: Mapping[str, Any], ctx: Context) -> str:
    message = resolve(arguments.get("ErrorMessage", ""), ctx)
    return str(message) if message not in (None, "") else "Fail step reached"


class FailHandler:
    def run(self, step, execution) -> Outcome:
        message = fail_message(step.arguments, execution.context())
        return Outcome.failed(message, properties={}, execution_reason=message)
