"""``mlops models promote`` locally: answer the deploy pipeline's promotion gate for one model version.

The gate is a Callback step (the project's ``Declaration.promotion``) whose message carries the version's
``ModelPackageArn``. Promoting completes it as SendPipelineExecutionStepSuccess does, with the gate's output
set to who promoted; rejecting fails it, so production's steps never run and staging keeps serving. Either
way the decision is appended to the registry's audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlops.errors import MlopsError
from mlops.local.handlers.callback import Callbacks
from mlops.local.state.home import Home
from mlops.project import PromotionGate

PROMOTED, PROMOTION_REJECTED = "promote", "reject-promotion"  # audit actions


class PromotionError(MlopsError):
    """Nothing waits for this version's promotion, or the project has no gate."""


@dataclass
class Promotion:
    execution_id: str
    token: str
    promoted: bool


def waiting_for(home: Home, gate: PromotionGate, package_arn: str) -> list[dict[str, Any]]:
    """The gate's waiting callbacks whose message names ``package_arn``, oldest first."""
    return [
        row
        for row in Callbacks(home).waiting()
        if row["step"] == gate.step
        and (row["message"].get("arguments") or {}).get("ModelPackageArn") == package_arn
    ]


def promote(
    home: Home, gate: PromotionGate, package: dict[str, Any], *, actor: str, reason: str, reject: bool = False
) -> Promotion:
    """Answer the one deployment of ``package`` (a registry row) that waits at the gate."""
    version = f"{package['group_name']}/{package['version']}"
    if package.get("approval_status") != "Approved" and not reject:
        raise PromotionError(
            f"{version} is {package.get('approval_status')}, not Approved: it cannot be promoted"
        )
    rows = waiting_for(home, gate, package["arn"])
    if not rows:
        others = [
            (r["message"].get("arguments") or {}).get("ModelPackageArn", "?").rpartition("model-package/")[2]
            for r in Callbacks(home).waiting()
            if r["step"] == gate.step
        ]
        hint = f"waiting: {', '.join(others)}" if others else "no deployment waits at the gate"
        raise PromotionError(f"no deployment of {version} waits at {gate.step} ({hint})")
    if len(rows) > 1:
        executions = ", ".join(r["execution_id"] for r in rows)
        raise PromotionError(
            f"{len(rows)} deployments of {version} wait at {gate.step} (executions {executions})"
        )
    (row,) = rows
    callbacks = Callbacks(home)
    if reject:
        callbacks.fail(row["token"], f"promotion of {version} rejected by {actor}: {reason}")
    else:
        callbacks.succeed(row["token"], {gate.output: actor})
    home.registry.add_audit(
        package, actor=actor, action=PROMOTION_REJECTED if reject else PROMOTED,
        reason=f"{reason} (execution {row['execution_id']})",
    )  # fmt: skip
    return Promotion(row["execution_id"], row["token"], not reject)
