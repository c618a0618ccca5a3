"""Application Auto Scaling for SageMaker endpoint variants, locally: the records and the policy engine.

AWS scales a variant's ``DesiredInstanceCount`` from CloudWatch alarms; here :class:`Scaler` does the same
from the figures the local endpoints keep (``metrics``) and acts through ``capacity`` (the number of local
model-server instances of a variant). The API that fills the records is :mod:`.autoscaling_api`.

**Records** live in ``<home>/hosting/autoscaling/``: ``targets.json``, ``policies.json``, ``scheduled.json``
(lists of the API's own shapes, timestamps as epoch seconds, plus a ``Local`` member the API never shows:
tags, alarm links, the engine's memory) and ``activities.jsonl`` (one scaling activity a line, newest
last). Every read-modify-write holds ``.lock`` (``fcntl.flock``), so the API server, a CLI and the engine
in other processes never race; the JSON files are replaced whole (temp file + ``os.replace``). Only
``sagemaker`` / ``endpoint/<EndpointName>/variant/<VariantName>`` /
``sagemaker:variant:DesiredInstanceCount`` can be registered: anything else is a ValidationException
naming the field and its value.

**Time.** CloudWatch data points are one minute; locally one minute lasts ``period_s`` seconds (default
60.0, real time), and every minute-based figure shrinks with it: the data points, the alarms' evaluation
windows, and the cooldowns (AWS seconds × ``period_s``/60). So ``Scaler(..., period_s=0.2)`` runs AWS's
behaviour 300 times faster, and a metric ``Sum`` over one period is what AWS sees per minute. Scheduled
actions are calendar times and use the real clock (the ``now`` given to :meth:`Scaler.tick`). A data
point is a complete window ``[k·w, (k+1)·w)`` of width ``w`` (epoch-aligned); a policy is evaluated once
per new data point however often ``tick`` runs, and a tick that comes late evaluates only the newest one.
``metrics(endpoint, variant, metric_name, statistic, start, end)`` (aware UTC datetimes) answers one data
point; ``None`` means no data point (CloudWatch's missing data: an endpoint without traffic publishes
none), which never breaches an alarm, so (as on AWS) a variant without traffic is not scaled in unless
the metrics report 0.

**Target tracking** (``TargetTrackingScaling``) works as the two alarms AWS creates for it (their names,
``TargetTracking-<ResourceId>-AlarmHigh-<uuid>`` / ``-AlarmLow-<uuid>``, are in the policy's ``Alarms``):

- metric: ``SageMakerVariantInvocationsPerInstance`` is ``InvocationsPerInstance`` ``Sum`` per period; a
  ``CustomizedMetricSpecification`` is its ``MetricName`` / ``Statistic``, read for the policy's own
  variant (its ``Namespace``/``Dimensions`` are kept and shown, not used; metric math is refused);
- scale out fast: ``high_periods`` (3) consecutive data points above ``TargetValue`` give
  ``desired = ceil(current × newest / TargetValue)``, at most ``MaxCapacity``;
- scale in slowly: ``low_periods`` (15) consecutive data points below ``scale_in_ratio`` (0.9) ×
  ``TargetValue`` give ``desired = ceil(current × highest of them / TargetValue)``, at least
  ``MinCapacity``; never with ``DisableScaleIn`` (then no AlarmLow is created, as on AWS);
- ``ScaleOutCooldown`` (default 300 s, SageMaker's): "won't increase the desired capacity again unless a
  larger scale out is triggered": during it only data points measured after the scale-out count, so a
  further scale-out needs ``high_periods`` fresh points that still call for more instances;
  ``ScaleInCooldown`` (default 300 s): no scale-in by the policy during it; a scale-out is never held back
  by it (and ends it);
- capacity 0 has no per-instance metric: target tracking neither acts on it nor scales out of it (AWS:
  scale-from-zero needs a step policy); it scales in to 0 only when ``MinCapacity`` is 0 and the metric
  is 0 over the whole window (``ceil`` keeps any traffic at ≥ 1 instance).

**Step scaling** (``StepScaling``) runs when its CloudWatch alarm is in ALARM. There is no CloudWatch here,
so the alarm is given locally with :func:`put_alarm` (``home``, the policy's ARN or name, a spec of
``PutMetricAlarm``'s members: ``MetricName``, ``Statistic``, ``Period`` (AWS seconds: 60 is one local
period), ``EvaluationPeriods``, optional ``DatapointsToAlarm``, ``Threshold``, ``ComparisonOperator``,
optional ``AlarmName``): what ``PutMetricAlarm(AlarmActions=[policy ARN])`` does on AWS. The spec is kept
with the policy (its ``Alarms`` then list it) and goes with it. The alarm is in ALARM when at least
``DatapointsToAlarm`` of the last ``EvaluationPeriods`` data points breach; while it is, the policy is
invoked at every data point (CloudWatch repeats Auto Scaling actions). The value is the window's data
points aggregated by ``MetricAggregationType`` (default Average); its difference from ``Threshold`` picks
the step: ``[lower, upper)`` for a Greater* alarm, ``(lower, upper]`` for a Less* one (the
StepAdjustment docs' two examples), a missing bound being infinite. ``ChangeInCapacity`` adds,
``ExactCapacity`` sets, ``PercentChangeInCapacity`` adds that percent of the current capacity rounded
as AWS does (above 1 down, 0..1 to 1, -1..0 to -1, below -1 up) and at least ``MinAdjustmentMagnitude``.
``Cooldown`` (default 300 s): during it after the policy's scale-out, a new scale-out counts from the
capacity before that one (AWS's example: +2, then a +3 step during the cooldown adds 1) and does not
restart the cooldown; the policy's scale-ins wait for the cooldown of its last activity to end.

**Several policies** on one target: the largest capacity wins, scale-out before scale-in, and target
tracking scales in only when all the target's target-tracking policies are ready to (AWS's rules; a
step policy's scale-in is not held back by them). ``SuspendedState`` turns dynamic scale-in/-out and
scheduled scaling off. Capacity outside the target's ``[MinCapacity, MaxCapacity]`` (after a
RegisterScalableTarget or a scheduled action changed the range) is brought inside at the next tick.

**Scheduled actions**: ``at(yyyy-mm-ddThh:mm:ss)``, ``rate(N minute|minutes|hour|hours|day|days)`` and
``cron(Minutes Hours Day-of-month Month Day-of-week Year)``, at and cron in ``Timezone`` (IANA, default
UTC), between ``StartTime`` and ``EndTime``. A due action sets the target's Min/MaxCapacity, and the
capacity is clamped into the new range. A tick runs an action at most once, for its latest occurrence
since its last run: an occurrence missed while no engine ran runs late, at the next tick (the range it
set is still the one meant), earlier missed ones not at all; an occurrence from before the action was put
never runs. ``rate`` counts from ``StartTime`` (its first run) or else from when the action was put.
Expressions are checked and evaluated by :mod:`mlops.schedule_expressions` (``croniter``, after a
documented conversion of AWS's cron fields).

**Activities** (``activities.jsonl``, returned by DescribeScalingActivities) record each change in AWS's
words: "Setting desired instance count to 3." caused by "monitor alarm <alarm> in state ALARM triggered
policy <policy>", "minimum capacity was set to 2", or for a scheduled action "Setting min capacity to 2
and max capacity to 5" caused by "scheduled action name <name> was triggered"; ``Successful``, or
``Failed`` with ``capacity.set``'s error. A policy held back by Min/MaxCapacity records one not-scaled
activity (``NotScaledReasons`` ``AlreadyAtMaxCapacity``/``AlreadyAtMinCapacity``) until its situation
changes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import operator
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from mlops import schedule_expressions
from mlops.errors import MlopsError
from mlops.schedule_expressions import Schedule, ScheduleError

log = logging.getLogger(__name__)

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
TARGET_TRACKING, STEP_SCALING = "TargetTrackingScaling", "StepScaling"
DEFAULT_COOLDOWN_S = 300  # SageMaker variants' ScaleIn/ScaleOutCooldown default, and step scaling's Cooldown
HIGH_PERIODS = 3  # target tracking's AlarmHigh: 3 data points of 1 minute
LOW_PERIODS = 15  # AlarmLow: 15 data points of 1 minute...
SCALE_IN_RATIO = 0.9  # ...below 90% of the target value
ACTIVITY_RETENTION_S = 6 * 7 * 86400  # DescribeScalingActivities: "from the previous six weeks"
PREDEFINED_METRICS = {"SageMakerVariantInvocationsPerInstance": ("InvocationsPerInstance", "Sum")}
STATISTICS = ("Average", "Minimum", "Maximum", "SampleCount", "Sum")
ADJUSTMENT_TYPES = ("ChangeInCapacity", "PercentChangeInCapacity", "ExactCapacity")
AGGREGATIONS: dict[str, Callable[[list[float]], float]] = {
    "Average": lambda values: sum(values) / len(values),
    "Minimum": min,
    "Maximum": max,
}
COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}
_SAGEMAKER_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")  # EndpointName and VariantName
_EPS = 1e-6


class AutoscalingError(MlopsError):
    """An answer of the API that is an error: the class name is its ``__type``."""

    status = 400


class ValidationException(AutoscalingError):
    """A request the service refuses: the message names the field and the value."""


class ObjectNotFoundException(AutoscalingError):
    """A scalable target, policy or scheduled action that is not registered."""


class InvalidNextTokenException(AutoscalingError):
    """A NextToken that no Describe call gave out."""


class Capacity(Protocol):
    """A variant's number of local instances: what the scalable dimension acts on."""

    def current(self, endpoint: str, variant: str) -> int | None:
        """The instance count, or None when the endpoint or variant is gone."""

    def set(self, endpoint: str, variant: str, n: int, reason: str) -> None:
        """Make it ``n``; raising records the activity as Failed with the error's text."""


Metrics = Callable[[str, str, str, str, datetime, datetime], float | None]


# -- identities ---------------------------------------------------------------------------------------------


def resource_id(endpoint: str, variant: str) -> str:
    return f"endpoint/{endpoint}/variant/{variant}"


def parse_resource_id(value: str) -> tuple[str, str]:
    """``(EndpointName, VariantName)`` of ``endpoint/<EndpointName>/variant/<VariantName>``."""
    parts = value.split("/") if isinstance(value, str) else []
    if (
        len(parts) != 4
        or (parts[0], parts[2]) != ("endpoint", "variant")
        or not all(_SAGEMAKER_NAME.fullmatch(p) for p in (parts[1], parts[3]))
    ):
        raise ValidationException(
            f"Unsupported ResourceId {value!r} for service namespace {NAMESPACE}: "
            "expected endpoint/<EndpointName>/variant/<VariantName>"
        )
    return parts[1], parts[3]


def check_namespace(namespace: Any) -> None:
    if namespace != NAMESPACE:
        raise ValidationException(
            f"Unsupported ServiceNamespace {namespace!r}: only {NAMESPACE!r} scales locally"
        )


def check_dimension(dimension: Any) -> None:
    if dimension != DIMENSION:
        raise ValidationException(
            f"Unsupported ScalableDimension {dimension!r}: SageMaker endpoint variants scale {DIMENSION}"
        )


def check_target_key(namespace: Any, resource: Any, dimension: Any) -> tuple[str, str]:
    """The three members naming a scalable target, checked; ``(endpoint, variant)``."""
    check_namespace(namespace)
    endpoint_variant = parse_resource_id(resource)
    check_dimension(dimension)
    return endpoint_variant


# -- records ------------------------------------------------------------------------------------------------


def _write_json(path: Path, doc: Any) -> None:
    """``doc`` as ``path``, whole or not at all: readers without the lock never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@dataclass
class Snapshot:
    """The records as one transaction sees them; ``activities`` are the new ones it appends."""

    targets: list[dict]
    policies: list[dict]
    scheduled: list[dict]
    activities: list[dict] = field(default_factory=list)

    def target(self, resource: str) -> dict | None:
        return next((t for t in self.targets if t["ResourceId"] == resource), None)

    def policies_of(self, resource: str) -> list[dict]:
        return [p for p in self.policies if p["ResourceId"] == resource]

    def policy(self, resource: str, name: str) -> dict | None:
        return next((p for p in self.policies_of(resource) if p["PolicyName"] == name), None)

    def policy_by_arn(self, arn: str) -> dict | None:
        return next((p for p in self.policies if p["PolicyARN"] == arn), None)

    def scheduled_action(self, resource: str, name: str) -> dict | None:
        return next(
            (a for a in self.scheduled if a["ResourceId"] == resource and a["ScheduledActionName"] == name),
            None,
        )

    def record(self, activity: dict) -> None:
        self.activities.append(activity)


class Records:
    """The autoscaling records of one local home (see the module docstring)."""

    _LISTS = ("targets", "policies", "scheduled")

    def __init__(self, home: Path | str):
        self.dir = Path(home) / "hosting" / "autoscaling"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _load(self, name: str) -> list[dict]:
        try:
            return json.loads((self.dir / f"{name}.json").read_text())
        except FileNotFoundError:
            return []

    def _snapshot(self) -> Snapshot:
        return Snapshot(*(self._load(name) for name in self._LISTS))

    def read(self) -> Snapshot:
        """A consistent copy of the records, for reading only."""
        with self._locked():
            return self._snapshot()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Snapshot]:
        """Change the records under the lock: lists that changed are rewritten, new activities appended
        (nothing is written when the block raises). Not reentrant."""
        with self._locked():
            snap = self._snapshot()
            before = {name: json.dumps(getattr(snap, name)) for name in self._LISTS}
            yield snap
            for name in self._LISTS:
                if json.dumps(getattr(snap, name)) != before[name]:
                    _write_json(self.dir / f"{name}.json", getattr(snap, name))
            if snap.activities:
                self._append(snap.activities)

    def _append(self, activities: list[dict]) -> None:
        path = self.dir / "activities.jsonl"
        with open(path, "a") as fh:
            fh.write("".join(json.dumps(a) + "\n" for a in activities))
        if path.stat().st_size > 8 * 1024 * 1024:  # keep the file to what Describe can still show
            cutoff = time.time() - ACTIVITY_RETENTION_S
            kept = [a for a in self._activities() if a["StartTime"] >= cutoff]
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".activities.", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write("".join(json.dumps(a) + "\n" for a in kept))
            os.replace(tmp, path)

    def _activities(self) -> list[dict]:
        try:
            lines = (self.dir / "activities.jsonl").read_text().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def activities(self) -> list[dict]:
        """Every recorded activity, oldest first."""
        with self._locked():
            return self._activities()


def new_activity(
    resource: str,
    description: str,
    cause: str,
    start: float,
    *,
    status: str = "Successful",
    message: str | None = None,
    end: float | None = None,
    not_scaled: list[dict] | None = None,
) -> dict:
    """One ScalingActivity in the API's shape (epoch seconds)."""
    activity = {
        "ActivityId": str(uuid.uuid4()),
        "ServiceNamespace": NAMESPACE,
        "ResourceId": resource,
        "ScalableDimension": DIMENSION,
        "Description": description,
        "Cause": cause,
        "StartTime": start,
        "EndTime": start if end is None else end,
        "StatusCode": status,
    }
    if message:
        activity["StatusMessage"] = message
    if not_scaled:
        activity["NotScaledReasons"] = not_scaled
    return activity


def set_capacity(capacity: Capacity, resource: str, n: int, cause: str, now: float) -> dict:
    """Ask ``capacity`` for ``n`` instances; the activity that records it (Failed when it raised)."""
    endpoint, variant = parse_resource_id(resource)
    started = time.monotonic()
    try:
        capacity.set(endpoint, variant, n, cause)
    except Exception as err:  # the runtime's refusal, whatever it is, is the activity's outcome
        log.warning("autoscaling %s to %d instances failed: %s", resource, n, err)
        status, message = "Failed", f"Failed to set desired instance count to {n}. {err}"
    else:
        log.info("autoscaling %s to %d instances: %s", resource, n, cause)
        status = "Successful"
        message = (
            f"Successfully set desired instance count to {n}. Change successfully fulfilled by sagemaker."
        )
    end = now + (time.monotonic() - started)
    return new_activity(
        resource,
        f"Setting desired instance count to {n}.",
        cause,
        now,
        status=status,
        message=message,
        end=end,
    )


def clamp_into_range(records: Records, capacity: Capacity, resource: str, now: float) -> int | None:
    """Bring the variant's capacity inside its target's [MinCapacity, MaxCapacity], recording it; the
    capacity then (None when the variant or the target is gone)."""
    target = records.read().target(resource)
    if target is None:
        return None
    current = capacity.current(*parse_resource_id(resource))
    if current is None:
        return None
    low, high = target["MinCapacity"], target["MaxCapacity"]
    if low <= current <= high:
        return current
    n, cause = (
        (low, f"minimum capacity was set to {low}")
        if current < low
        else (high, f"maximum capacity was set to {high}")
    )
    activity = set_capacity(capacity, resource, n, cause, now)
    with records.transaction() as snap:
        snap.record(activity)
    return n if activity["StatusCode"] == "Successful" else current


# -- schedules ----------------------------------------------------------------------------------------------


def _validation(err: ScheduleError) -> ValidationException:
    return ValidationException(str(err))


def croniter_expression(fields: str, expression: str | None = None) -> str:
    """AWS's cron fields as croniter's expression (:func:`mlops.schedule_expressions.croniter_expression`)."""
    try:
        return schedule_expressions.croniter_expression(fields, expression)
    except ScheduleError as err:
        raise _validation(err) from None


def zone(name: str | None) -> ZoneInfo:
    try:
        return schedule_expressions.zone(name)
    except ScheduleError as err:
        raise _validation(err) from None


def parse_schedule(expression: Any, timezone_name: str | None = None) -> Schedule:
    """A scheduled action's ``Schedule`` and ``Timezone``; a ValidationException names what is wrong."""
    try:
        return schedule_expressions.parse_schedule(expression, timezone_name)
    except ScheduleError as err:
        raise _validation(err) from None


# -- policy configurations ----------------------------------------------------------------------------------


def _number(value: Any, name: str, *, integer: bool = False, minimum: float | None = None) -> float:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
        raise ValidationException(
            f"Invalid {name} {value!r}: expected {'an integer' if integer else 'a number'}"
        )
    if minimum is not None and value < minimum:
        raise ValidationException(f"Invalid {name} {value!r}: must be at least {minimum:g}")
    return value


def metric_of(config: dict) -> tuple[str, str]:
    """The ``(MetricName, Statistic)`` a target tracking configuration reads."""
    predefined = config.get("PredefinedMetricSpecification")
    if predefined:
        return PREDEFINED_METRICS[predefined["PredefinedMetricType"]]
    custom = config["CustomizedMetricSpecification"]
    return custom["MetricName"], custom["Statistic"]


def check_target_tracking(config: Any) -> None:
    """A TargetTrackingScalingPolicyConfiguration the local engine can run, or a ValidationException."""
    if not isinstance(config, dict):
        raise ValidationException(
            "TargetTrackingScalingPolicyConfiguration is required for TargetTrackingScaling"
        )
    target = _number(config.get("TargetValue"), "TargetValue")
    if target <= 0:
        raise ValidationException(f"Invalid TargetValue {target!r}: must be greater than 0")
    for key in ("ScaleOutCooldown", "ScaleInCooldown"):
        if key in config:
            _number(config[key], key, integer=True, minimum=0)
    predefined, custom = (
        config.get("PredefinedMetricSpecification"),
        config.get("CustomizedMetricSpecification"),
    )
    if bool(predefined) == bool(custom):
        raise ValidationException(
            "Exactly one of PredefinedMetricSpecification and CustomizedMetricSpecification is required"
        )
    if predefined:
        kind = predefined.get("PredefinedMetricType")
        if kind not in PREDEFINED_METRICS:
            raise ValidationException(
                f"Unsupported PredefinedMetricType {kind!r} for {DIMENSION}: "
                f"expected one of {', '.join(PREDEFINED_METRICS)}"
            )
        return
    if custom.get("Metrics"):
        raise ValidationException(
            "CustomizedMetricSpecification.Metrics (metric math) is not supported locally"
        )
    for key in ("MetricName", "Namespace", "Statistic"):
        if not custom.get(key):
            raise ValidationException(f"CustomizedMetricSpecification.{key} is required")
    if custom["Statistic"] not in STATISTICS:
        raise ValidationException(f"Invalid CustomizedMetricSpecification.Statistic {custom['Statistic']!r}")


def _bounds(step: dict) -> tuple[float, float]:
    low, high = step.get("MetricIntervalLowerBound"), step.get("MetricIntervalUpperBound")
    return (-math.inf if low is None else low, math.inf if high is None else high)


def check_step_scaling(config: Any) -> None:
    """A StepScalingPolicyConfiguration with AWS's rules for step adjustments, or a ValidationException."""
    if not isinstance(config, dict):
        raise ValidationException("StepScalingPolicyConfiguration is required for StepScaling")
    kind = config.get("AdjustmentType")
    if kind not in ADJUSTMENT_TYPES:
        raise ValidationException(
            f"Invalid AdjustmentType {kind!r}: expected one of {', '.join(ADJUSTMENT_TYPES)}"
        )
    if "Cooldown" in config:
        _number(config["Cooldown"], "Cooldown", integer=True, minimum=0)
    if config.get("MinAdjustmentMagnitude") is not None:
        _number(config["MinAdjustmentMagnitude"], "MinAdjustmentMagnitude", integer=True, minimum=1)
        if kind != "PercentChangeInCapacity":
            raise ValidationException("MinAdjustmentMagnitude is only supported with PercentChangeInCapacity")
    if config.get("MetricAggregationType", "Average") not in AGGREGATIONS:
        raise ValidationException(f"Invalid MetricAggregationType {config['MetricAggregationType']!r}")
    steps = config.get("StepAdjustments")
    if not isinstance(steps, list) or not steps:
        raise ValidationException("At least one step adjustment is required for a step scaling policy")
    for step in steps:
        adjustment = _number(step.get("ScalingAdjustment"), "ScalingAdjustment", integer=True)
        if kind == "ExactCapacity" and adjustment < 0:
            raise ValidationException(
                f"Invalid ScalingAdjustment {adjustment} for ExactCapacity: must be >= 0"
            )
        for key in ("MetricIntervalLowerBound", "MetricIntervalUpperBound"):
            if step.get(key) is not None:
                _number(step[key], key)
        low, high = _bounds(step)
        if low == -math.inf and high == math.inf:
            raise ValidationException("The upper and lower bound can't be null in the same step adjustment")
        if low >= high:
            raise ValidationException(
                f"Step adjustment {step}: the lower bound must be below the upper bound"
            )
    _check_step_ranges([_bounds(s) for s in steps])


def _check_step_ranges(ranges: list[tuple[float, float]]) -> None:
    ranges = sorted(ranges)
    for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False):
        if high != low:
            raise ValidationException(
                f"The ranges of your step adjustments can't {'overlap' if low < high else 'have a gap'}: "
                f"{high:g} and {low:g}"
            )
    if ranges[0][0] < 0 and ranges[0][0] != -math.inf:
        raise ValidationException(
            "A step adjustment has a negative lower bound: one needs a null lower bound"
        )
    if ranges[-1][1] > 0 and ranges[-1][1] != math.inf:
        raise ValidationException(
            "A step adjustment has a positive upper bound: one needs a null upper bound"
        )


def pick_step(steps: list[dict], difference: float, upper_inclusive: bool) -> dict | None:
    """The step adjustment whose interval holds ``difference`` (metric minus threshold)."""
    for step in steps:
        low, high = _bounds(step)
        inside = low < difference <= high if upper_inclusive else low <= difference < high
        if inside:
            return step
    return None


def adjusted_capacity(kind: str, current: int, adjustment: int, min_magnitude: int | None = None) -> int:
    """The capacity a step adjustment asks for, rounded as Application Auto Scaling rounds percents."""
    if kind == "ExactCapacity":
        return adjustment
    if kind == "ChangeInCapacity":
        return current + adjustment
    change = current * adjustment / 100
    if change > 1:
        delta = math.floor(change)
    elif change > 0:
        delta = 1
    elif change >= -1:
        delta = -1 if change < 0 else 0
    else:
        delta = math.ceil(change)
    if min_magnitude and delta and abs(delta) < min_magnitude:
        delta = min_magnitude if delta > 0 else -min_magnitude
    return current + delta


# -- alarms (CloudWatch's part of step scaling) -------------------------------------------------------------


def check_alarm(spec: Any, policy_name: str) -> dict:
    """A local alarm spec with its defaults filled in (see :func:`put_alarm`), or a ValidationException."""
    if not isinstance(spec, dict):
        raise ValidationException(f"Invalid alarm {spec!r}: expected a mapping")
    out = dict(spec)
    if not isinstance(out.get("MetricName"), str) or not out["MetricName"]:
        raise ValidationException(f"Invalid alarm MetricName {out.get('MetricName')!r}")
    if out.get("Statistic") not in STATISTICS:
        raise ValidationException(
            f"Invalid alarm Statistic {out.get('Statistic')!r}: expected one of {', '.join(STATISTICS)}"
        )
    if out.get("ComparisonOperator") not in COMPARISONS:
        raise ValidationException(
            f"Invalid alarm ComparisonOperator {out.get('ComparisonOperator')!r}: expected one of {', '.join(COMPARISONS)}"
        )
    _number(out.get("Threshold"), "alarm Threshold")
    period = _number(out.get("Period", 60), "alarm Period", integer=True, minimum=1)
    if period not in (10, 30) and period % 60:
        raise ValidationException(f"Invalid alarm Period {period}: must be 10, 30 or a multiple of 60")
    out["Period"] = period
    evaluations = _number(out.get("EvaluationPeriods"), "alarm EvaluationPeriods", integer=True, minimum=1)
    to_alarm = _number(
        out.get("DatapointsToAlarm", evaluations), "alarm DatapointsToAlarm", integer=True, minimum=1
    )
    if to_alarm > evaluations:
        raise ValidationException(
            f"Invalid alarm DatapointsToAlarm {to_alarm}: more than EvaluationPeriods {evaluations}"
        )
    out["DatapointsToAlarm"] = to_alarm
    out.setdefault("AlarmName", f"{policy_name}-alarm")
    return out


def _find_policy(snap: Snapshot, policy: str) -> dict:
    if policy.startswith("arn:"):
        found = snap.policy_by_arn(policy)
        matches = [found] if found else []
    else:
        matches = [p for p in snap.policies if p["PolicyName"] == policy]
    if not matches:
        raise ObjectNotFoundException(f"No scaling policy found for {policy!r}")
    if len(matches) > 1:
        raise ValidationException(f"Policy name {policy!r} is used on several targets: give its PolicyARN")
    return matches[0]


def put_alarm(home: Path | str, policy: str, spec: dict) -> dict:
    """Link a step scaling policy (its ARN or name) to the alarm that triggers it: what CloudWatch's
    ``PutMetricAlarm(AlarmActions=[PolicyARN])`` does on AWS. Returns the stored spec."""
    records = Records(home)
    with records.transaction() as snap:
        found = _find_policy(snap, policy)
        if found["PolicyType"] != STEP_SCALING:
            raise ValidationException(
                f"Policy {found['PolicyName']!r} is {found['PolicyType']}: alarms trigger StepScaling policies"
            )
        alarm = check_alarm(spec, found["PolicyName"])
        local = found.setdefault("Local", {})
        local["Alarm"] = alarm
        local.get("State", {}).pop("Evaluated", None)
    return alarm


def delete_alarm(home: Path | str, policy: str) -> None:
    """Unlink a step scaling policy from its alarm (CloudWatch's DeleteAlarms)."""
    with Records(home).transaction() as snap:
        _find_policy(snap, policy).get("Local", {}).pop("Alarm", None)


# -- the engine ---------------------------------------------------------------------------------------------


def _epoch(now: datetime) -> float:
    if now.tzinfo is None:
        raise ValueError("Scaler.tick needs an aware datetime")
    return now.timestamp()


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _window_end(now: float, width: float) -> float:
    """The end of the newest complete data point of ``width`` seconds."""
    return math.floor(now / width + 1e-9) * width


def _ceil(value: float) -> int:
    return math.ceil(value - 1e-9)


@dataclass
class _Decision:
    """What one policy wants at one data point."""

    policy: dict
    evaluated: float  # the end of the data point it was evaluated at
    proposal: int | None = None
    cause: str = ""
    scale_in_ready: bool = False


class Scaler:
    """Evaluates the records' scheduled actions and scaling policies against ``metrics`` and moves
    ``capacity``; see the module docstring for the rules and the meaning of ``period_s``."""

    def __init__(
        self,
        home: Path | str,
        metrics: Metrics,
        capacity: Capacity,
        *,
        period_s: float = 60.0,
        high_periods: int = HIGH_PERIODS,
        low_periods: int = LOW_PERIODS,
        scale_in_ratio: float = SCALE_IN_RATIO,
    ):
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self.records = Records(home)
        self.metrics, self.capacity = metrics, capacity
        self.period_s, self.high_periods, self.low_periods = period_s, high_periods, low_periods
        self.scale_in_ratio = scale_in_ratio

    def _scaled(self, aws_seconds: float) -> float:
        """AWS seconds as local seconds: one AWS minute lasts ``period_s``."""
        return aws_seconds * self.period_s / 60.0

    # -- the loop

    def run(self, stop: threading.Event, interval_s: float | None = None) -> None:
        """``tick`` until ``stop`` is set, every ``interval_s`` (default: a quarter period, at most 5 s)."""
        interval = interval_s if interval_s is not None else min(self.period_s / 4, 5.0)
        while not stop.is_set():
            try:
                self.tick(datetime.now(UTC))
            except Exception:  # one bad tick (a metrics source down) must not end autoscaling
                log.exception("autoscaling tick failed")
            stop.wait(interval)

    def tick(self, now: datetime) -> list[dict]:
        """Evaluate everything once at ``now`` (aware); the activities it recorded."""
        ts = _epoch(now)
        activities = self._run_scheduled(now)
        memo: dict[tuple, float | None] = {}
        for target in self.records.read().targets:
            activities += self._evaluate_target(target["ResourceId"], ts, memo)
        return activities

    # -- scheduled actions

    def _run_scheduled(self, now: datetime) -> list[dict]:
        """Due scheduled actions change their targets' ranges (records only: no runtime call, so under
        one lock: two engines never run an occurrence twice)."""
        with self.records.transaction() as snap:
            for action in snap.scheduled:
                target = snap.target(action["ResourceId"])
                if target is None or (target.get("SuspendedState") or {}).get("ScheduledScalingSuspended"):
                    continue
                due = self._due(action, now)
                if due is None:
                    continue
                action.setdefault("Local", {})["After"] = due.timestamp()
                snap.record(self._apply_scheduled(target, action, now.timestamp()))
            return list(snap.activities)

    @staticmethod
    def _due(action: dict, now: datetime) -> datetime | None:
        local = action.get("Local") or {}
        try:
            schedule = parse_schedule(action["Schedule"], action.get("Timezone"))
        except ValidationException as err:  # records written by hand: skip, say why
            log.warning("scheduled action %s: %s", action["ScheduledActionName"], err)
            return None
        start = _at(action["StartTime"]) if action.get("StartTime") is not None else None
        end = _at(action["EndTime"]) if action.get("EndTime") is not None else None
        after = _at(local.get("After", action["CreationTime"]))
        anchor = start or _at(local.get("Anchor", action["CreationTime"]))
        return schedule.latest(after, now, anchor=anchor, start=start, end=end)

    @staticmethod
    def _apply_scheduled(target: dict, action: dict, now: float) -> dict:
        wanted = action.get("ScalableTargetAction") or {}
        low = wanted.get("MinCapacity", target["MinCapacity"])
        high = wanted.get("MaxCapacity", target["MaxCapacity"])
        parts = [
            f"{word} capacity to {wanted[key]}"
            for word, key in (("min", "MinCapacity"), ("max", "MaxCapacity"))
            if key in wanted
        ]
        description = "Setting " + " and ".join(parts)
        cause = f"scheduled action name {action['ScheduledActionName']} was triggered"
        if low > high:
            message = f"Failed to set {' and '.join(parts)}: minimum capacity {low} is greater than maximum capacity {high}"
            return new_activity(
                target["ResourceId"], description, cause, now, status="Failed", message=message
            )
        target["MinCapacity"], target["MaxCapacity"] = low, high
        message = f"Successfully set {' and '.join(parts)}. Change successfully fulfilled by {NAMESPACE}."
        return new_activity(target["ResourceId"], description, cause, now, message=message)

    # -- dynamic scaling

    def _evaluate_target(self, resource: str, now: float, memo: dict) -> list[dict]:
        current = clamp_into_range(self.records, self.capacity, resource, now)
        if current is None:
            return []
        snap = self.records.read()
        target = snap.target(resource)
        policies = snap.policies_of(resource)
        if target is None or not policies:
            return []
        endpoint, variant = parse_resource_id(resource)
        decisions = [
            d for p in policies if (d := self._decide(p, endpoint, variant, current, now, memo)) is not None
        ]
        if not decisions:
            return []
        winner, n, blocked = self._choose(target, policies, decisions, current)
        activities = []
        if winner is not None and not blocked:
            activities.append(set_capacity(self.capacity, resource, n, winner.cause, now))
        return self._remember(resource, decisions, winner, current, n, blocked, activities, now)

    def _choose(
        self, target: dict, policies: list[dict], decisions: list[_Decision], current: int
    ) -> tuple[_Decision | None, int, str | None]:
        """AWS's precedence: any scale-out before a scale-in, the largest capacity among them; target
        tracking scales in only when all its policies on the target are ready to. Returns the winner, the
        capacity it gets within the range, and why it is not scaled (None when it is)."""
        suspended = target.get("SuspendedState") or {}
        outs = [d for d in decisions if d.proposal is not None and d.proposal > current]
        if outs:
            if suspended.get("DynamicScalingOutSuspended"):
                return None, current, None
            winner = max(outs, key=lambda d: d.proposal or 0)
            n = min(winner.proposal or 0, target["MaxCapacity"])
            return winner, n, "AlreadyAtMaxCapacity" if n <= current else None
        ready = {d.policy["PolicyARN"] for d in decisions if d.scale_in_ready}
        tracking_ready = all(p["PolicyARN"] in ready for p in policies if p["PolicyType"] == TARGET_TRACKING)
        ins = [
            d
            for d in decisions
            if d.proposal is not None
            and d.proposal < current
            and (d.policy["PolicyType"] == STEP_SCALING or tracking_ready)
        ]
        if not ins or suspended.get("DynamicScalingInSuspended"):
            return None, current, None
        winner = max(ins, key=lambda d: d.proposal or 0)
        n = max(winner.proposal or 0, target["MinCapacity"])
        return winner, n, "AlreadyAtMinCapacity" if n >= current else None

    def _remember(
        self,
        resource: str,
        decisions: list[_Decision],
        winner: _Decision | None,
        current: int,
        n: int,
        blocked: str | None,
        activities: list[dict],
        now: float,
    ) -> list[dict]:
        """Write what the policies evaluated, the winner's cooldown, and the activities."""
        with self.records.transaction() as snap:
            for d in decisions:
                policy = snap.policy_by_arn(d.policy["PolicyARN"])
                if policy is None:  # deleted meanwhile
                    continue
                state = policy.setdefault("Local", {}).setdefault("State", {})
                state["Evaluated"] = d.evaluated
                if winner is None or d.policy["PolicyARN"] != winner.policy["PolicyARN"]:
                    continue
                if blocked:
                    target = snap.target(resource) or {}
                    key = f"{blocked}:{current}"  # once per situation, not once a data point
                    if state.get("NotScaled") != key:
                        state["NotScaled"] = key
                        snap.record(self._not_scaled(resource, winner, blocked, current, target, now))
                    continue
                state.pop("NotScaled", None)
                if activities and activities[-1]["StatusCode"] == "Successful":
                    self._start_cooldown(policy, state, current, n, now)
            for activity in activities:
                snap.record(activity)
            return list(snap.activities)

    def _start_cooldown(self, policy: dict, state: dict, current: int, n: int, now: float) -> None:
        """Remember the policy's scaling for its cooldowns. A step scale-out during the cooldown of an
        earlier one keeps that cooldown (and its base): the capacity it added counts for the next."""
        if n < current:
            state["ScaleIn"] = {"Time": now, "From": current, "To": n}
            return
        previous = state.get("ScaleOut")
        if policy["PolicyType"] == STEP_SCALING and previous:
            cooldown = self._scaled(
                policy["StepScalingPolicyConfiguration"].get("Cooldown", DEFAULT_COOLDOWN_S)
            )
            if now < previous["Time"] + cooldown:
                previous["To"] = n
                return
        state["ScaleOut"] = {"Time": now, "From": current, "To": n}
        state.pop("ScaleIn", None)  # a scale-out ends the scale-in cooldown

    @staticmethod
    def _not_scaled(
        resource: str, winner: _Decision, code: str, current: int, target: dict, now: float
    ) -> dict:
        reason: dict[str, Any] = {"Code": code, "CurrentCapacity": current}
        if code == "AlreadyAtMaxCapacity":
            reason["MaxCapacity"] = target.get("MaxCapacity", current)
        else:
            reason["MinCapacity"] = target.get("MinCapacity", current)
        return new_activity(
            resource,
            "Attempting to scale due to alarm triggered",
            winner.cause,
            now,
            status="Failed",
            message=f"Failed to set desired instance count to {winner.proposal}",
            not_scaled=[reason],
        )

    def _decide(
        self, policy: dict, endpoint: str, variant: str, current: int, now: float, memo: dict
    ) -> _Decision | None:
        """The policy's decision at the newest data point, or None when it has no new one."""
        if policy["PolicyType"] == TARGET_TRACKING:
            return self._target_tracking(policy, endpoint, variant, current, now, memo)
        if policy["PolicyType"] == STEP_SCALING:
            return self._step_scaling(policy, endpoint, variant, current, now, memo)
        return None

    def _points(
        self,
        key: tuple[str, str, str, str],
        end: float,
        width: float,
        count: int,
        memo: dict,
        not_before: float | None = None,
    ) -> list[float | None]:
        """The last ``count`` data points of ``width`` seconds ending at ``end``, newest first (fewer when
        ``not_before`` cuts them: only points measured after it)."""
        points = []
        for i in range(count):
            high = end - i * width
            low = high - width
            if not_before is not None and low < not_before - _EPS:
                break
            memo_key = (*key, round(low, 6), round(high, 6))
            if memo_key not in memo:
                memo[memo_key] = self.metrics(*key, _at(low), _at(high))
            points.append(memo[memo_key])
        return points

    @staticmethod
    def _alarm_name(policy: dict, which: str) -> str:
        return next(
            (a["AlarmName"] for a in policy.get("Alarms") or [] if f"-Alarm{which}-" in a["AlarmName"]), which
        )

    def _target_tracking(
        self, policy: dict, endpoint: str, variant: str, current: int, now: float, memo: dict
    ) -> _Decision | None:
        state = (policy.get("Local") or {}).get("State") or {}
        end = _window_end(now, self.period_s)
        if end <= state.get("Evaluated", -math.inf) + _EPS:
            return None
        decision = _Decision(policy, end)
        if current < 1:
            return decision
        config = policy["TargetTrackingScalingPolicyConfiguration"]
        target = config["TargetValue"]
        key = (endpoint, variant, *metric_of(config))
        name = policy["PolicyName"]
        last_out = state.get("ScaleOut")
        cooldown = self._scaled(config.get("ScaleOutCooldown", DEFAULT_COOLDOWN_S))
        fresh_after = last_out["Time"] if last_out and now < last_out["Time"] + cooldown else None
        high = self._points(key, end, self.period_s, self.high_periods, memo, fresh_after)
        if len(high) == self.high_periods and all(v is not None and v > target for v in high):
            desired = _ceil(current * (high[0] or 0) / target)
            if desired > current:
                decision.proposal = desired
                decision.cause = (
                    f"monitor alarm {self._alarm_name(policy, 'High')} in state ALARM triggered policy {name}"
                )
            return decision
        if config.get("DisableScaleIn"):
            return decision
        low = self._points(key, end, self.period_s, self.low_periods, memo)
        if len(low) < self.low_periods or not all(
            v is not None and v < self.scale_in_ratio * target for v in low
        ):
            return decision
        last_in = state.get("ScaleIn")
        if last_in and now < last_in["Time"] + self._scaled(
            config.get("ScaleInCooldown", DEFAULT_COOLDOWN_S)
        ):
            return decision
        desired = _ceil(current * max(v or 0 for v in low) / target)
        if desired < current:
            decision.proposal, decision.scale_in_ready = desired, True
            decision.cause = (
                f"monitor alarm {self._alarm_name(policy, 'Low')} in state ALARM triggered policy {name}"
            )
        return decision

    def _step_scaling(
        self, policy: dict, endpoint: str, variant: str, current: int, now: float, memo: dict
    ) -> _Decision | None:
        local = policy.get("Local") or {}
        alarm, state = local.get("Alarm"), local.get("State") or {}
        if not alarm:
            return None  # no alarm triggers it
        width = self._scaled(alarm["Period"])
        end = _window_end(now, width)
        if end <= state.get("Evaluated", -math.inf) + _EPS:
            return None
        decision = _Decision(policy, end)
        key = (endpoint, variant, alarm["MetricName"], alarm["Statistic"])
        points = self._points(key, end, width, alarm["EvaluationPeriods"], memo)
        compare, threshold = COMPARISONS[alarm["ComparisonOperator"]], alarm["Threshold"]
        breaching = sum(1 for v in points if v is not None and compare(v, threshold))
        values = [v for v in points if v is not None]
        if breaching < alarm["DatapointsToAlarm"] or not values:
            return decision
        config = policy["StepScalingPolicyConfiguration"]
        value = AGGREGATIONS[config.get("MetricAggregationType", "Average")](values)
        step = pick_step(
            config["StepAdjustments"], value - threshold, alarm["ComparisonOperator"].startswith("Less")
        )
        if step is None:
            return decision
        proposal = self._step_proposal(config, step, current, state, now)
        if proposal is not None and proposal != current:
            decision.proposal = max(proposal, 0)
            decision.cause = (
                f"monitor alarm {alarm['AlarmName']} in state ALARM triggered policy {policy['PolicyName']}"
            )
        return decision

    def _step_proposal(self, config: dict, step: dict, current: int, state: dict, now: float) -> int | None:
        """The step's capacity with the policy's cooldown applied (see the module docstring)."""
        kind, adjustment = config["AdjustmentType"], step["ScalingAdjustment"]
        magnitude = config.get("MinAdjustmentMagnitude")
        proposal = adjusted_capacity(kind, current, adjustment, magnitude)
        cooldown = self._scaled(config.get("Cooldown", DEFAULT_COOLDOWN_S))
        last_out, last_in = state.get("ScaleOut"), state.get("ScaleIn")
        in_cooldown_out = bool(last_out) and now < last_out["Time"] + cooldown
        if proposal > current and in_cooldown_out:
            proposal = adjusted_capacity(kind, last_out["From"], adjustment, magnitude)
            return proposal if proposal > current else None
        if proposal < current:
            recent = [s["Time"] for s in (last_out, last_in) if s]
            if recent and now < max(recent) + cooldown:
                return None
        return proposal
