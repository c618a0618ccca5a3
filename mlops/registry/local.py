"""Approval against the local registry (the home's SQLite): status changes, audit trail, lineage, events.

An approval records the "SageMaker Model Package State Change" event that SageMaker would put on the
default bus, so the local deploy is started by the same event the EventBridge rule matches on AWS.

A version that serves on a local endpoint is never Rejected silently: ``reject`` refuses with the endpoints
it serves on, unless ``undeploy=True``, which stops those endpoints first (each stop is an audit row) and then
records the rejection. Stopping first means a failure half-way leaves a stopped endpoint, never a Rejected
version that still answers.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops.aws.events import sample_state_change_event
from mlops.local.state.home import Home
from mlops.local.state.lineage import lineage
from mlops.local.state.registry import AuditCheck
from mlops.registry import (
    APPROVED,
    REJECTED,
    ApprovalError,
    StatusChanges,
    check_transition,
    parse_version,
)

log = logging.getLogger(__name__)



@dataclass
class StatusChange:
    """The outcome of approve/reject: ``changed`` is False for a repeat (nothing was written but the audit)."""

    package: dict[str, Any]
    previous: str
    status: str
    changed: bool
    message: str
    event: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def state_change_event(package: dict[str, Any]) -> dict[str, Any]:
    """The EventBridge event SageMaker emits for this package's current status."""
    arn = package["arn"]
    parts = arn.split(":")
    region, account = parts[3], parts[4]
    event = sample_state_change_event(
        package["group_name"], package["approval_status"], account, region, package["version"]
    )
    event["id"] = str(uuid.uuid4())
    event["time"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event["resources"] = [arn]
    event["detail"]["ModelPackageArn"] = arn
    created = package.get("created_at")
    if created:
        event["detail"]["CreationTime"] = int(datetime.fromisoformat(created).timestamp() * 1000)
    return event


class LocalRegistry(StatusChanges):
    def __init__(self, home: Home):
        self.home = home

    def list(self, group: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        return self.home.registry.list(group=group, status=status)

    def get(self, ref: str, group: str | None = None) -> dict[str, Any]:
        name, version = parse_version(ref, group)
        row = self.home.registry.get(name, version)
        if row is None:
            known = [f"{p['group_name']}/{p['version']}" for p in self.home.registry.list(group=name)]
            hint = f" (known: {', '.join(known[-5:])})" if known else ""
            raise ApprovalError(f"model version {name}/{version}: not in the local registry{hint}")
        return row

    def show(self, ref: str, group: str | None = None) -> dict[str, Any]:
        """The package with its lineage (execution, input data, code bundles), audit trail and deployments."""
        row = self.get(ref, group)
        return {
            **row,
            "lineage": lineage(self.home, row),
            "audit_trail": self.home.registry.audit_trail(row["group_name"], row["version"]),
            "deployments": self.home.deployments.list(row["arn"]),
        }

    def verify(self) -> AuditCheck:
        """Walk the audit trail's hash chain (see ``mlops.local.state.registry``)."""
        return self.home.registry.verify_audit()

    def serving_endpoints(self, package: dict[str, Any]) -> list[str]:
        """Names of the local endpoints whose active version is this package and that are not Stopped."""
        from mlops.serving import supervisor

        label = f"{package['group_name']}/{package['version']}"
        return [
            e.name
            for e in supervisor.list_endpoints(home=self.home.root)
            if e.status != supervisor.STOPPED and e.active is not None and e.active.version == label
        ]

    def reject(
        self, ref: str, reason: str, *, actor: str, group: str | None = None, undeploy: bool = False
    ) -> StatusChange:
        return self._change(ref, REJECTED, reason, actor=actor, force=False, group=group, undeploy=undeploy)

    def _undeploy(self, row: dict[str, Any], endpoints: list[str], *, actor: str, reason: str) -> list[str]:
        from mlops.serving import supervisor

        stopped = []
        for endpoint in endpoints:
            supervisor.stop_endpoint(endpoint, home=self.home.root)
            stopped.append(endpoint)
            self.home.registry.add_audit(
                row, actor=actor, action="undeploy", reason=f"stopped endpoint {endpoint} to reject: {reason}"
            )
            log.warning("stopped endpoint %s: it served %s/%s", endpoint, row["group_name"], row["version"])
        return stopped

    def _change(
        self, ref: str, target: str, reason: str, *, actor: str, force: bool, group: str | None,
        undeploy: bool = False,
    ) -> StatusChange:  # fmt: skip
        row = self.get(ref, group)
        name = f"model version {row['group_name']}/{row['version']}"
        previous = row["approval_status"]
        verb = "approve" if target == APPROVED else "reject"
        stopped: list[str] = []
        if target == REJECTED:
            if not reason or not reason.strip():
                check_transition(name, previous, target, reason, force)  # raises: a reason is required
            serving = self.serving_endpoints(row)
            if serving and not undeploy:
                raise ApprovalError(
                    f"{name} serves on {', '.join(serving)}; pass --undeploy to stop it, "
                    "or approve another version first"
                )
            stopped = self._undeploy(row, serving, actor=actor, reason=reason.strip())
        if not check_transition(name, previous, target, reason, force):
            self.home.registry.add_audit(
                row, actor=actor, action=f"{verb} (no change)", reason=reason.strip()
            )
            return StatusChange(row, previous, target, False, f"{name} is already {target}; nothing to do",
                                extra={"stopped": stopped})  # fmt: skip
        action = f"{verb} (forced)" if force and previous == REJECTED else verb
        row = self.home.registry.set_approval_status(
            row["group_name"], row["version"], target, expected=previous, actor=actor, reason=reason.strip(),
            action=action,
        )  # fmt: skip
        event = state_change_event(row)
        self.home.events.publish(event)
        log.info("%s: %s -> %s by %s", name, previous, target, actor)
        return StatusChange(
            row, previous, target, True, f"{name}: {previous} -> {target}", event, extra={"stopped": stopped}
        )
