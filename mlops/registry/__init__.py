"""Model approval: the local registry and SageMaker's, one set of verbs (list, show, approve, reject)."""

from __future__ import annotations

import re

from mlops.errors import MlopsError

APPROVED, REJECTED, PENDING = "Approved", "Rejected", "PendingManualApproval"
STATUSES = (PENDING, APPROVED, REJECTED)

# arn:aws:sagemaker:<region>:<account>:model-package/<group>/<version>
_ARN = re.compile(r"^arn:aws[a-z-]*:sagemaker:[^:]*:[^:]*:model-package/(?P<group>[^/]+)/(?P<version>\d+)$")
_REF = re.compile(r"^(?:(?P<group>[A-Za-z0-9](?:-*[A-Za-z0-9])*)/)?(?P<version>\d+)$")


class ApprovalError(MlopsError):
    """A refused approval change (bad version reference, forbidden transition, missing reason)."""

    exit_code = 2


def parse_version(ref: str, group: str | None = None) -> tuple[str, int]:
    """``group/N``, ``N`` with ``group``, or a model package ARN -> (group, N)."""
    ref = ref.strip()
    if m := _ARN.match(ref):
        found = m.group("group")
    elif m := _REF.match(ref):
        found = m.group("group") or group
        if not found:
            raise ApprovalError(f"model version {ref!r}: give GROUP/{ref} or --group GROUP")
    else:
        raise ApprovalError(
            f"model version {ref!r}: expected GROUP/N, N with --group, or a model package ARN"
        )
    if group and found != group:
        raise ApprovalError(f"model version {ref!r} is in group {found!r}, not --group {group!r}")
    version = int(m.group("version"))
    if version < 1:
        raise ApprovalError(f"model version {ref!r}: versions start at 1")
    return found, version


def check_transition(name: str, current: str, target: str, reason: str, force: bool) -> bool:
    """True when the status must change; False for a repeat (a no-op); raises for a refused change."""
    if not reason or not reason.strip():
        raise ApprovalError(f"{name}: --reason is required (say why, it goes into the audit trail)")
    if current == target:
        return False
    if current == REJECTED and target == APPROVED and not force:
        raise ApprovalError(f"{name} was Rejected; approving it needs --force")
    return True


class StatusChanges:
    """approve/reject for a registry backend; each backend implements ``_change`` (local SQLite or AWS)."""

    def approve(self, ref: str, reason: str, *, actor: str, force: bool = False, group: str | None = None):
        return self._change(ref, APPROVED, reason, actor=actor, force=force, group=group)

    def reject(self, ref: str, reason: str, *, actor: str, group: str | None = None):
        return self._change(ref, REJECTED, reason, actor=actor, force=False, group=group)

    def _change(self, ref: str, target: str, reason: str, *, actor: str, force: bool, group: str | None):
        raise NotImplementedError
