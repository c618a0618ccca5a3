"""The approval trigger: which events start model-deploy, and a matcher for EventBridge event patterns.

The CloudFormation rule in ``infra/mlops.yaml`` carries the same pattern (tests compare the two). moto has
no TestEventPattern, so :func:`matches` implements EventBridge's matching rules that the pattern uses;
tests check it against moto's own event routing.
"""

from __future__ import annotations

import re
from typing import Any

APPROVAL_SOURCE = "aws.sagemaker"
APPROVAL_DETAIL_TYPE = "SageMaker Model Package State Change"
PACKAGE_ARN_PATH = "$.detail.ModelPackageArn"
PACKAGE_ARN_PARAMETER = "ModelPackageArn"


def approval_event_pattern(model_package_group: str) -> dict[str, Any]:
    """Approved versions of our group only; Rejected/PendingManualApproval and other groups do not match."""
    return {
        "source": [APPROVAL_SOURCE],
        "detail-type": [APPROVAL_DETAIL_TYPE],
        "detail": {
            "ModelPackageGroupName": [model_package_group],
            "ModelApprovalStatus": ["Approved"],
        },
    }


def approval_pipeline_parameters() -> list[dict[str, str]]:
    """Target parameters for model-deploy; EventBridge resolves ``$.`` values from the event (dynamic paths)."""
    return [{"Name": PACKAGE_ARN_PARAMETER, "Value": PACKAGE_ARN_PATH}]


def resolve_parameters(parameters: list[dict[str, str]], event: dict[str, Any]) -> list[dict[str, str]]:
    """What EventBridge passes to StartPipelineExecution for ``event``: ``$.a.b`` values looked up."""
    out = []
    for p in parameters:
        value = p["Value"]
        if value.startswith("$."):
            node: Any = event
            for part in value[2:].split("."):
                if not isinstance(node, dict) or part not in node:
                    raise KeyError(f"{value}: not in the event")
                node = node[part]
            value = node if isinstance(node, str) else str(node)
        out.append({"Name": p["Name"], "Value": value})
    return out


def sample_state_change_event(
    group: str,
    status: str = "Approved",
    account: str = "0" * 12,  # placeholders: tests and the local registry pass real values
    region: str = "local",
    version: int = 1,
) -> dict[str, Any]:
    """A "SageMaker Model Package State Change" event shaped like the ones SageMaker emits."""
    arn = f"arn:aws:sagemaker:{region}:{account}:model-package/{group}/{version}"
    return {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": APPROVAL_DETAIL_TYPE,
        "source": APPROVAL_SOURCE,
        "account": account,
        "time": "2026-01-01T00:00:00Z",
        "region": region,
        "resources": [arn],
        "detail": {
            "ModelPackageGroupName": group,
            "ModelPackageVersion": version,
            "ModelPackageArn": arn,
            "ModelPackageName": f"{group}/{version}",
            "ModelApprovalStatus": status,
            "ModelPackageStatus": "Completed",
            "CreationTime": 1767225600000,
        },
    }


# ------------------------------------------------------------------------------------------- matcher

_NUMERIC_OPS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "=": lambda a, b: a == b,
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
}


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge semantics: every pattern key must match; a list means "any of"; missing fields fail."""
    for key, rule in pattern.items():
        if key == "$or":
            if not any(matches(alt, event) for alt in rule):
                return False
            continue
        present = isinstance(event, dict) and key in event
        value = event.get(key) if present else None
        if isinstance(rule, dict):
            if not present or not isinstance(value, dict) or not matches(rule, value):
                return False
            continue
        if not isinstance(rule, list):
            raise ValueError(f"event pattern: {key}: must be a list or an object (got {rule!r})")
        if not _any_match(rule, present, value):
            return False
    return True


def _any_match(rules: list, present: bool, value: Any) -> bool:
    values = value if isinstance(value, list) else [value]
    for rule in rules:
        if isinstance(rule, dict) and "exists" in rule:
            if bool(rule["exists"]) == (present and value is not None):
                return True
            continue
        if not present:
            continue
        if any(_match_one(rule, v) for v in values):
            return True
    return False


def _match_one(rule: Any, value: Any) -> bool:
    if not isinstance(rule, dict):
        return rule == value and type(rule) is type(value) or (rule is None and value is None)
    (op, arg), *_ = rule.items()
    if op == "prefix":
        return isinstance(value, str) and _text_rule(arg, value, str.startswith)
    if op == "suffix":
        return isinstance(value, str) and _text_rule(arg, value, str.endswith)
    if op == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == arg.lower()
    if op == "wildcard":
        regex = "^" + ".*".join(re.escape(p) for p in arg.split("*")) + "$"
        return isinstance(value, str) and re.match(regex, value) is not None
    if op == "anything-but":
        if isinstance(arg, dict):
            return not _match_one(arg, value)
        banned = arg if isinstance(arg, list) else [arg]
        return value not in banned
    if op == "numeric":
        if not isinstance(value, int | float) or isinstance(value, bool):
            return False
        pairs = list(zip(arg[::2], arg[1::2], strict=True))
        return all(_NUMERIC_OPS[o](value, bound) for o, bound in pairs)
    raise ValueError(f"event pattern: unsupported operator {op!r}")


def _text_rule(arg, value: str, test) -> bool:
    if isinstance(arg, dict) and "equals-ignore-case" in arg:
        return test(value.lower(), arg["equals-ignore-case"].lower())
    return test(value, arg)
