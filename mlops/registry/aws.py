"""Approval against SageMaker's model registry: ListModelPackages, DescribeModelPackage, UpdateModelPackage.

Same verbs and rules as the local registry. On AWS the status change itself emits the state change event
that the EventBridge rule turns into a model-deploy execution; the audit trail is SageMaker's own
(``ApprovalDescription`` = the reason, ``LastModifiedBy``/``LastModifiedTime``) plus CloudTrail, and the
caller's ``--by`` name travels in ``CustomerMetadataProperties``. Every request is checked against botocore's
service model before it is sent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from mlops.aws.session import Aws, aws_call
from mlops.botocore_check import problems
from mlops.registry import (
    ApprovalError,
    StatusChanges,
    check_transition,
    parse_version,
)
from mlops.registry.local import StatusChange

log = logging.getLogger(__name__)

CHANGED_BY_KEY = "mlops:status-changed-by"


class RequestInvalid(ApprovalError):
    """A request that botocore's service model refuses (a bug here, never sent)."""


def validate_request(client, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """Check ``params`` against the service model's input shape of ``operation``; returns them unchanged."""
    found = problems(client.meta.service_model.service_name, operation, params)
    if found:
        raise RequestInvalid(f"{operation} request is invalid: {' '.join(' '.join(found).split())}")
    return params


def list_request(group: str | None, status: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {"SortBy": "CreationTime", "SortOrder": "Ascending"}
    if group:
        params["ModelPackageGroupName"] = group
    else:
        params["ModelPackageType"] = "Versioned"
    if status:
        params["ModelApprovalStatus"] = status
    return params


def update_request(arn: str, status: str, reason: str, actor: str) -> dict[str, Any]:
    return {
        "ModelPackageArn": arn,
        "ModelApprovalStatus": status,
        "ApprovalDescription": reason[:1024],
        "CustomerMetadataProperties": {CHANGED_BY_KEY: actor[:256]},
    }


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    """A ListModelPackages summary in the local registry's row shape, so one table prints both."""
    return {
        "group_name": summary.get("ModelPackageGroupName", ""),
        "version": summary.get("ModelPackageVersion"),
        "arn": summary["ModelPackageArn"],
        "approval_status": summary.get("ModelApprovalStatus", ""),
        "model_data_url": None,
        "metrics": {},
        "execution_id": None,
        "created_at": _iso(summary.get("CreationTime")),
    }


class AwsRegistry(StatusChanges):
    def __init__(self, aws: Aws):
        self.aws = aws

    @property
    def client(self):
        return self.aws.sagemaker

    def list(self, group: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        params = validate_request(self.client, "ListModelPackages", list_request(group, status))
        rows = []
        with aws_call("sagemaker:ListModelPackages", group or "model packages"):
            for page in self.client.get_paginator("list_model_packages").paginate(**params):
                rows.extend(summary_row(s) for s in page.get("ModelPackageSummaryList", []))
        return rows

    def resolve_arn(self, ref: str, group: str | None = None) -> str:
        """An ARN as given; ``group/N`` looked up in the group's listing (the account is not ours to guess)."""
        name, version = parse_version(ref, group)
        if ref.strip().startswith("arn:"):
            return ref.strip()
        for row in self.list(group=name):
            if row["version"] == version:
                return row["arn"]
        raise ApprovalError(
            f"model version {name}/{version}: not in SageMaker's model registry ({self.aws.region})"
        )

    def describe(self, arn: str) -> dict[str, Any]:
        params = validate_request(self.client, "DescribeModelPackage", {"ModelPackageName": arn})
        with aws_call("sagemaker:DescribeModelPackage", arn):
            response = self.client.describe_model_package(**params)
        response.pop("ResponseMetadata", None)
        return response

    def show(self, ref: str, group: str | None = None) -> dict[str, Any]:
        described = self.describe(self.resolve_arn(ref, group))
        containers = (described.get("InferenceSpecification") or {}).get("Containers") or [{}]
        row = summary_row(described)
        row["model_data_url"] = containers[0].get("ModelDataUrl")
        row["metrics"] = described.get("ModelMetrics") or {}
        metadata = described.get("MetadataProperties") or {}
        row["lineage"] = {"execution_id": metadata.get("GeneratedBy"), "project_id": metadata.get("ProjectId"),
                          "commit": metadata.get("CommitId"), "repository": metadata.get("Repository")}  # fmt: skip
        modified_by = described.get("LastModifiedBy") or {}
        row["audit_trail"] = [
            {
                "at": _iso(described.get("LastModifiedTime") or described.get("CreationTime")),
                "actor": (described.get("CustomerMetadataProperties") or {}).get(CHANGED_BY_KEY)
                or modified_by.get("UserProfileName")
                or "",
                "action": "last status change",
                "from_status": None,
                "to_status": described.get("ModelApprovalStatus"),
                "reason": described.get("ApprovalDescription") or "",
            }
        ]
        row["deployments"] = []
        row["described"] = {k: _iso(v) for k, v in described.items()}
        return row

    def _change(
        self, ref: str, target: str, reason: str, *, actor: str, force: bool, group: str | None
    ) -> StatusChange:
        arn = self.resolve_arn(ref, group)
        described = self.describe(arn)
        row = summary_row(described)
        name = f"model version {row['group_name']}/{row['version']}"
        previous = row["approval_status"]
        if not check_transition(name, previous, target, reason, force):
            return StatusChange(row, previous, target, False, f"{name} is already {target}; nothing to do")
        params = validate_request(
            self.client, "UpdateModelPackage", update_request(arn, target, reason.strip(), actor)
        )
        with aws_call("sagemaker:UpdateModelPackage", arn):
            self.client.update_model_package(**params)
        row["approval_status"] = target
        log.info("%s: %s -> %s by %s (AWS)", name, previous, target, actor)
        return StatusChange(row, previous, target, True, f"{name}: {previous} -> {target}")
