"""What a batch-score start resolves before the run (``mlops run`` and ``mlops start``): the version to score.

The rule of ``code/resolve_model.py``, which applies it on SageMaker when the schedule starts a run without
one: the model package group's latest (highest) Approved version. Locally it reads the home's registry,
on AWS SageMaker's. A run with nothing Approved, or named a version that is not Approved, is refused before
it starts, in one line naming the group.
"""

from __future__ import annotations

from mlops.errors import MlopsError
from mlops.project import StartRequest
from mlops.registry import APPROVED
from steps.batch_score.code.resolve_model import no_approved_message

PACKAGE_ARN = "ModelPackageArn"


class NoApprovedVersion(MlopsError):
    """The model package group has no Approved version to score with."""


def start_parameters(request: StartRequest) -> dict[str, str]:
    group = request.cfg.registry.model_package_group
    approved = request.registry.list(group=group, status=APPROVED)
    given = request.params.get(PACKAGE_ARN, "").strip()
    if given:  # the caller named the version: it must be one a reviewer approved
        if given not in {row["arn"] for row in approved}:
            raise NoApprovedVersion(
                f"ModelPackageArn {given} is not an Approved version of model package group {group}"
            )
        return {}
    if not approved:
        raise NoApprovedVersion(no_approved_message(group))
    return {PACKAGE_ARN: max(approved, key=lambda row: row["version"])["arn"]}
