"""The ``application-autoscaling`` API over the local autoscaling records: what boto3 clients call.

JSON 1.1 (``X-Amz-Target: AnyScaleFrontendService.<Operation>``, ``application/x-amz-json-1.1``), shapes and
members as botocore's service model ``application-autoscaling`` ``2016-02-06`` says, timestamps as epoch
seconds. A request is first checked against that model (botocore's ParamValidator: required members,
types, minimum lengths; then enums, maximum lengths and patterns), each problem naming its member; then
what the service itself checks: the SageMaker target (namespace, ``endpoint/<E>/variant/<V>``, dimension),
``MinCapacity <= MaxCapacity``, policy configurations and schedule expressions (see :mod:`.autoscaling`).
Errors are ``{"__type": ..., "message": ...}`` with status 400: ValidationException,
ObjectNotFoundException (an unregistered target, policy or scheduled action), InvalidNextTokenException;
an unknown operation is UnknownOperationException, a body that is not JSON a SerializationException.

Operations: RegisterScalableTarget, DeregisterScalableTarget (its policies and scheduled actions go with
it), DescribeScalableTargets, PutScalingPolicy (TargetTrackingScaling and StepScaling; PredictiveScaling is
ECS-only on AWS and refused), DescribeScalingPolicies, DeleteScalingPolicy, PutScheduledAction,
DescribeScheduledActions, DeleteScheduledAction, DescribeScalingActivities. ARNs use account
the placeholder account (:data:`mlops.local.arns.PLACEHOLDER_ACCOUNT`) and the region of ``AWS_REGION``/``AWS_DEFAULT_REGION`` (else ``local``).

:func:`handle` answers one HTTP request; :func:`call` is the same without the wire (a request dict in, a
response dict out, an :class:`.autoscaling.AutoscalingError` raised). Given ``capacity`` (the variants'
instance counts), RegisterScalableTarget refuses a variant that does not exist and clamps the capacity
into the new range at once, as AWS does; without it the :class:`.autoscaling.Scaler` clamps it at its
next tick.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops.botocore_check import service_model, service_problems
from mlops.local.arns import PLACEHOLDER_ACCOUNT
from mlops.local.hosting.autoscaling import (
    ACTIVITY_RETENTION_S,
    DIMENSION,
    NAMESPACE,
    STEP_SCALING,
    TARGET_TRACKING,
    AutoscalingError,
    Capacity,
    InvalidNextTokenException,
    ObjectNotFoundException,
    Records,
    Snapshot,
    ValidationException,
    check_dimension,
    check_namespace,
    check_step_scaling,
    check_target_key,
    check_target_tracking,
    clamp_into_range,
    parse_schedule,
)

log = logging.getLogger(__name__)

SERVICE = "application-autoscaling"
TARGET_PREFIX = "AnyScaleFrontendService."
JSON_11 = "application/x-amz-json-1.1"
ACCOUNT = PLACEHOLDER_ACCOUNT
ROLE_ARN = (
    f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/sagemaker.application-autoscaling.amazonaws.com/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
_SUSPENDED = ("DynamicScalingInSuspended", "DynamicScalingOutSuspended", "ScheduledScalingSuspended")
_CONFIGS = {
    TARGET_TRACKING: "TargetTrackingScalingPolicyConfiguration",
    STEP_SCALING: "StepScalingPolicyConfiguration",
}

Operation = Callable[[Records, dict, Capacity | None], dict]


def region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "local"


# -- the service model --------------------------------------------------------------------------------------


def _service_model():
    return service_model(SERVICE)


def validate(operation: str, request: dict) -> None:
    """A ValidationException listing every problem of ``request`` under the operation's input shape."""
    problems = service_problems(SERVICE, operation, request)
    if problems:
        count = len(problems)
        raise ValidationException(
            f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems)
        )


# -- helpers ------------------------------------------------------------------------------------------------


def _time(value: Any) -> float | None:
    """A request timestamp (epoch seconds, or an ISO 8601 string) as epoch seconds."""
    if value is None:
        return None
    from botocore.utils import parse_to_aware_datetime

    return parse_to_aware_datetime(value).timestamp()


def _shown(record: dict) -> dict:
    """A record as the API shows it: without the local members and empty ones."""
    return {k: v for k, v in record.items() if k != "Local" and v is not None}


def _not_registered(resource: str) -> ObjectNotFoundException:
    return ObjectNotFoundException(
        f"No scalable target registered for service namespace: {NAMESPACE}, resource ID: {resource}, "
        f"scalable dimension: {DIMENSION}"
    )


def _registered(snap: Snapshot, request: dict) -> dict:
    """The scalable target a Put/Delete request names: checked, and registered."""
    check_target_key(request["ServiceNamespace"], request["ResourceId"], request["ScalableDimension"])
    target = snap.target(request["ResourceId"])
    if target is None:
        raise _not_registered(request["ResourceId"])
    return target


def _page(request: dict, items: list[dict], default_size: int, key: str) -> dict:
    """One page of ``items`` under ``key`` with the NextToken of the next (an opaque offset)."""
    offset = 0
    if token := request.get("NextToken"):
        try:
            offset = int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise InvalidNextTokenException(f"Invalid NextToken {token!r}") from None
    size = request.get("MaxResults") or default_size
    if not 1 <= size <= default_size:
        raise ValidationException(f"Invalid MaxResults {size}: must be between 1 and {default_size}")
    out: dict[str, Any] = {key: [_shown(i) for i in items[offset : offset + size]]}
    if offset + size < len(items):
        out["NextToken"] = base64.urlsafe_b64encode(json.dumps({"offset": offset + size}).encode()).decode()
    return out


def _filtered(
    request: dict, items: list[dict], names_key: str | None = None, name_key: str = ""
) -> list[dict]:
    """The Describe filters: ResourceId(s), ScalableDimension, and a list of names."""
    check_namespace(request["ServiceNamespace"])
    if request.get("ScalableDimension") is not None:
        check_dimension(request["ScalableDimension"])
    if (resource := request.get("ResourceId")) is not None:
        items = [i for i in items if i["ResourceId"] == resource]
    if (resources := request.get("ResourceIds")) is not None and resources:
        items = [i for i in items if i["ResourceId"] in resources]
    if names_key and (names := request.get(names_key)):
        items = [i for i in items if i[name_key] in names]
    return items


def _capacity_range(target: dict) -> None:
    low, high = target.get("MinCapacity"), target.get("MaxCapacity")
    for key, value in (("MinCapacity", low), ("MaxCapacity", high)):
        if value is not None and value < 0:
            raise ValidationException(f"Invalid {key} {value}: must be at least 0")
    if low is not None and high is not None and low > high:
        raise ValidationException(f"MinCapacity {low} cannot be greater than MaxCapacity {high}")


# -- scalable targets ---------------------------------------------------------------------------------------


def register_scalable_target(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    """Create or update a target: on update only the members given change (AWS's rule)."""
    endpoint_variant = check_target_key(
        request["ServiceNamespace"], request["ResourceId"], request["ScalableDimension"]
    )
    resource = request["ResourceId"]
    if capacity is not None and capacity.current(*endpoint_variant) is None:
        raise ValidationException(
            f"Unable to register {resource}: endpoint {endpoint_variant[0]!r} has no variant {endpoint_variant[1]!r}"
        )
    _capacity_range(request)
    with records.transaction() as snap:
        target = snap.target(resource)
        if target is None:
            if request.get("MinCapacity") is None or request.get("MaxCapacity") is None:
                raise ValidationException(
                    "MinCapacity and MaxCapacity are required to register a new scalable target"
                )
            target = {
                "ServiceNamespace": NAMESPACE,
                "ResourceId": resource,
                "ScalableDimension": DIMENSION,
                "RoleARN": request.get("RoleARN") or ROLE_ARN,
                "CreationTime": time.time(),
                "SuspendedState": dict.fromkeys(_SUSPENDED, False),
                "ScalableTargetARN": f"arn:aws:application-autoscaling:{region()}:{ACCOUNT}:scalable-target/{uuid.uuid4().hex}",
                "Local": {"Tags": request.get("Tags") or {}},
            }
            snap.targets.append(target)
        for key in ("MinCapacity", "MaxCapacity", "RoleARN"):
            if request.get(key) is not None:
                target[key] = request[key]
        target["SuspendedState"].update(
            {k: v for k, v in (request.get("SuspendedState") or {}).items() if v is not None}
        )
        _capacity_range(target)
        arn = target["ScalableTargetARN"]
    if capacity is not None:
        clamp_into_range(records, capacity, resource, time.time())
    return {"ScalableTargetARN": arn}


def deregister_scalable_target(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    with records.transaction() as snap:
        resource = _registered(snap, request)["ResourceId"]
        snap.targets[:] = [t for t in snap.targets if t["ResourceId"] != resource]
        snap.policies[:] = [p for p in snap.policies if p["ResourceId"] != resource]
        snap.scheduled[:] = [a for a in snap.scheduled if a["ResourceId"] != resource]
    return {}


def describe_scalable_targets(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    items = _filtered(request, sorted(records.read().targets, key=lambda t: t["CreationTime"]))
    return _page(request, items, 50, "ScalableTargets")


# -- scaling policies ---------------------------------------------------------------------------------------


def _alarm(name: str) -> dict:
    return {"AlarmName": name, "AlarmARN": f"arn:aws:cloudwatch:{region()}:{ACCOUNT}:alarm:{name}"}


def _tracking_alarms(policy: dict, previous: list[dict]) -> list[dict]:
    """AlarmHigh and (unless DisableScaleIn) AlarmLow, keeping the names an update had."""
    names = {
        which: next((a for a in previous if f"-Alarm{which}-" in a["AlarmName"]), None)
        for which in ("High", "Low")
    }
    wanted = ["High"] if policy[_CONFIGS[TARGET_TRACKING]].get("DisableScaleIn") else ["High", "Low"]
    return [
        names[w] or _alarm(f"TargetTracking-{policy['ResourceId']}-Alarm{w}-{uuid.uuid4()}") for w in wanted
    ]


def _check_policy(request: dict, existing: dict | None) -> str:
    kind = request.get("PolicyType") or (existing or {}).get("PolicyType")
    if kind is None:
        raise ValidationException("PolicyType is required to create a scaling policy")
    if kind not in _CONFIGS:
        raise ValidationException(
            f"Unsupported PolicyType {kind!r} for {NAMESPACE}: expected TargetTrackingScaling or StepScaling"
        )
    other = _CONFIGS[STEP_SCALING if kind == TARGET_TRACKING else TARGET_TRACKING]
    if request.get(other) is not None:
        raise ValidationException(f"{other} cannot be given for a {kind} policy")
    config = request.get(_CONFIGS[kind])
    if config is None and existing is not None and existing["PolicyType"] == kind:
        config = existing[_CONFIGS[kind]]
    (check_target_tracking if kind == TARGET_TRACKING else check_step_scaling)(config)
    return kind


def put_scaling_policy(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    """Create or update a policy (same name on the same target: same ARN, its state and alarm kept)."""
    with records.transaction() as snap:
        resource = _registered(snap, request)["ResourceId"]
        name = request["PolicyName"]
        existing = snap.policy(resource, name)
        kind = _check_policy(request, existing)
        policy = existing or {
            "PolicyARN": (
                f"arn:aws:autoscaling:{region()}:{ACCOUNT}:scalingPolicy:{uuid.uuid4()}:"
                f"resource/{NAMESPACE}/{resource}:policyName/{name}"
            ),
            "PolicyName": name,
            "ServiceNamespace": NAMESPACE,
            "ResourceId": resource,
            "ScalableDimension": DIMENSION,
            "CreationTime": time.time(),
            "Local": {},
        }
        if existing is None:
            snap.policies.append(policy)
        elif existing["PolicyType"] != kind:
            existing.pop(_CONFIGS[existing["PolicyType"]], None)
            existing["Local"] = {}
        policy["PolicyType"] = kind
        if request.get(_CONFIGS[kind]) is not None:
            policy[_CONFIGS[kind]] = request[_CONFIGS[kind]]
        if kind == TARGET_TRACKING:
            policy["Alarms"] = _tracking_alarms(policy, policy.get("Alarms") or [])
            return {"PolicyARN": policy["PolicyARN"], "Alarms": policy["Alarms"]}
        policy.pop("Alarms", None)
        return {"PolicyARN": policy["PolicyARN"]}


def _policy_shown(policy: dict) -> dict:
    shown = dict(policy)
    alarm = (policy.get("Local") or {}).get("Alarm")
    if policy["PolicyType"] == STEP_SCALING:
        shown["Alarms"] = [_alarm(alarm["AlarmName"])] if alarm else []
    return shown


def describe_scaling_policies(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    policies = sorted(records.read().policies, key=lambda p: p["CreationTime"])
    items = _filtered(request, policies, "PolicyNames", "PolicyName")
    return _page(request, [_policy_shown(p) for p in items], 10, "ScalingPolicies")


def delete_scaling_policy(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    with records.transaction() as snap:
        resource = _registered(snap, request)["ResourceId"]
        policy = snap.policy(resource, request["PolicyName"])
        if policy is None:
            raise ObjectNotFoundException(
                f"No scaling policy found for service namespace: {NAMESPACE}, resource ID: {resource}, "
                f"scalable dimension: {DIMENSION}, policy name: {request['PolicyName']}"
            )
        snap.policies.remove(policy)
    return {}


# -- scheduled actions --------------------------------------------------------------------------------------


def _scheduled_members(request: dict, existing: dict | None) -> dict:
    """The members of a Put: Schedule/Timezone/ScalableTargetAction kept when omitted on update,
    StartTime/EndTime replaced (cleared when omitted: the API's documented rule). All checked."""
    old = existing or {}
    schedule = request.get("Schedule") or old.get("Schedule")
    if not schedule:
        raise ValidationException("Schedule is required to create a scheduled action")
    timezone_name = request.get("Timezone") if request.get("Timezone") is not None else old.get("Timezone")
    parse_schedule(schedule, timezone_name)
    wanted = request.get("ScalableTargetAction")
    if wanted is None:
        wanted = old.get("ScalableTargetAction")
    wanted = {k: v for k, v in (wanted or {}).items() if v is not None}
    if not wanted:
        raise ValidationException("ScalableTargetAction needs MinCapacity, MaxCapacity or both")
    _capacity_range(wanted)
    start, end = _time(request.get("StartTime")), _time(request.get("EndTime"))
    if start is not None and end is not None and start > end:
        raise ValidationException(f"StartTime {request['StartTime']} is after EndTime {request['EndTime']}")
    return {
        "Schedule": schedule,
        "Timezone": timezone_name,
        "StartTime": start,
        "EndTime": end,
        "ScalableTargetAction": wanted,
    }


def put_scheduled_action(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    with records.transaction() as snap:
        resource = _registered(snap, request)["ResourceId"]
        name = request["ScheduledActionName"]
        existing = snap.scheduled_action(resource, name)
        members = _scheduled_members(request, existing)
        now = time.time()
        if existing is None:
            existing = {
                "ScheduledActionName": name,
                "ScheduledActionARN": (
                    f"arn:aws:autoscaling:{region()}:{ACCOUNT}:scheduledAction:{uuid.uuid4()}:"
                    f"resource/{NAMESPACE}/{resource}:scheduledActionName/{name}"
                ),
                "ServiceNamespace": NAMESPACE,
                "ResourceId": resource,
                "ScalableDimension": DIMENSION,
                "CreationTime": now,
            }
            snap.scheduled.append(existing)
        existing.update(members)
        existing["Local"] = {"After": now, "Anchor": now}  # a changed schedule runs from now on
    return {}


def describe_scheduled_actions(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    actions = sorted(records.read().scheduled, key=lambda a: a["CreationTime"])
    items = _filtered(request, actions, "ScheduledActionNames", "ScheduledActionName")
    return _page(request, items, 50, "ScheduledActions")


def delete_scheduled_action(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    with records.transaction() as snap:
        resource = _registered(snap, request)["ResourceId"]
        action = snap.scheduled_action(resource, request["ScheduledActionName"])
        if action is None:
            raise ObjectNotFoundException(
                f"No scheduled action found for service namespace: {NAMESPACE}, resource ID: {resource}, "
                f"scalable dimension: {DIMENSION}, scheduled action name: {request['ScheduledActionName']}"
            )
        snap.scheduled.remove(action)
    return {}


# -- activities ---------------------------------------------------------------------------------------------


def describe_scaling_activities(records: Records, request: dict, capacity: Capacity | None = None) -> dict:
    """The last six weeks' activities, newest first; not-scaled ones only when asked for."""
    cutoff = time.time() - ACTIVITY_RETENTION_S
    items = [a for a in records.activities() if a["StartTime"] >= cutoff]
    if not request.get("IncludeNotScaledActivities"):
        items = [a for a in items if not a.get("NotScaledReasons")]
    items = _filtered(request, items[::-1])
    return _page(request, items, 50, "ScalingActivities")


OPERATIONS: dict[str, Operation] = {
    "RegisterScalableTarget": register_scalable_target,
    "DeregisterScalableTarget": deregister_scalable_target,
    "DescribeScalableTargets": describe_scalable_targets,
    "PutScalingPolicy": put_scaling_policy,
    "DescribeScalingPolicies": describe_scaling_policies,
    "DeleteScalingPolicy": delete_scaling_policy,
    "PutScheduledAction": put_scheduled_action,
    "DescribeScheduledActions": describe_scheduled_actions,
    "DeleteScheduledAction": delete_scheduled_action,
    "DescribeScalingActivities": describe_scaling_activities,
}


# -- the wire -----------------------------------------------------------------------------------------------


def call(home: Path | str, operation: str, request: dict, *, capacity: Capacity | None = None) -> dict:
    """One operation without HTTP: the request checked against the service model, then answered."""
    if operation not in OPERATIONS:
        raise ValidationException(f"Unsupported operation {operation!r}")
    validate(operation, request)
    return OPERATIONS[operation](Records(home), request, capacity)


def _answer(
    status: int, doc: dict, extra: list[tuple[str, str]] = ()
) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [("Content-Type", JSON_11), ("x-amzn-RequestId", str(uuid.uuid4())), *extra]
    return status, headers, json.dumps(doc).encode()


def _error(status: int, kind: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return _answer(status, {"__type": kind, "message": message}, [("x-amzn-ErrorType", kind)])


def handle(
    home: Path | str, target: str, body: bytes, *, capacity: Capacity | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Answer one ``POST /`` of the API: ``target`` is its ``X-Amz-Target`` header."""
    operation = (
        target[len(TARGET_PREFIX) :] if isinstance(target, str) and target.startswith(TARGET_PREFIX) else None
    )
    if operation not in OPERATIONS:
        return _error(400, "UnknownOperationException", f"Unknown operation {target!r}")
    try:
        request = json.loads(body or b"{}")
    except ValueError as err:
        return _error(400, "SerializationException", f"The request body is not JSON: {err}")
    if not isinstance(request, dict):
        return _error(400, "SerializationException", "The request body is not a JSON object")
    try:
        response = call(home, operation, request, capacity=capacity)
    except AutoscalingError as err:
        return _error(err.status, type(err).__name__, str(err))
    except Exception as err:  # the service's 500, with the cause in the log
        log.exception("%s failed", operation)
        return _error(500, "InternalServiceException", f"{operation} failed: {err}")
    return _answer(200, response)
