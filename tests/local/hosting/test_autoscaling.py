"""Application Auto Scaling for local endpoint variants: the records and their checks, the policy engine on
a fake clock fed by metric data, scheduled actions (cron across DST, at, rate), and the real boto3
``application-autoscaling`` client against the wire."""

from __future__ import annotations

import bisect
import http.server
import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mlops.local.hosting import autoscaling_api
from mlops.local.hosting.autoscaling import (
    ObjectNotFoundException,
    Records,
    Scaler,
    ValidationException,
    adjusted_capacity,
    croniter_expression,
    parse_schedule,
    pick_step,
    put_alarm,
)

EP, VARIANT = "ep", "AllTraffic"
RID = f"endpoint/{EP}/variant/{VARIANT}"
KEY = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": RID,
    "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
}
MINUTE = timedelta(minutes=1)
TT = {"PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}}


def _start_of_tomorrow() -> datetime:
    """The fake clock starts after now: records are put at the real time, and AWS never runs an occurrence
    from before an action was put."""
    now = datetime.now(UTC)
    return datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)


class FakeCapacity:
    """A variant's instance count with its history, so the metrics can divide by the count of each minute."""

    def __init__(self, n: int):
        self.times: list[float] = [0.0]
        self.counts: list[int] = [n]
        self.sets: list[tuple[int, str]] = []
        self.clock = 0.0  # the fake clock's time of the tick in progress
        self.fail = False

    def current(self, endpoint: str, variant: str) -> int | None:
        return self.counts[-1] if (endpoint, variant) == (EP, VARIANT) else None

    def set(self, endpoint: str, variant: str, n: int, reason: str) -> None:
        if self.fail:
            raise RuntimeError("no capacity left on this machine")
        self.sets.append((n, reason))
        self.times.append(self.clock)
        self.counts.append(n)

    def at(self, ts: float) -> int:
        return self.counts[bisect.bisect_right(self.times, ts) - 1]


class Load:
    """Data the engine reads: total invocations per minute over time (``(from, value)`` steps), published
    as CloudWatch would: ``Invocations`` (Sum) and ``InvocationsPerInstance`` (Sum over the instances of
    that minute); any other metric name is a table of its own."""

    def __init__(self, capacity: FakeCapacity, steps: list[tuple[datetime, float]], **other: float):
        self.capacity, self.steps, self.other = capacity, steps, other
        self.queries: list[tuple[str, str, datetime, datetime]] = []

    def total(self, at: datetime) -> float | None:
        """None before the first step: no data point (the endpoint had no traffic yet)."""
        values = [value for start, value in self.steps if start <= at]
        return values[-1] if values else None

    def __call__(self, endpoint, variant, metric, statistic, start, end) -> float | None:
        self.queries.append((metric, statistic, start, end))
        if metric in self.other:
            return self.other[metric]
        scale, total = (end - start) / MINUTE, self.total(start)
        if total is None:
            return None
        if metric == "Invocations":
            return total * scale
        if metric == "InvocationsPerInstance":
            count = self.capacity.at(end.timestamp() - 0.001)  # the instances serving that minute
            return total * scale / count if count else None
        return None


@pytest.fixture
def home(tmp_path):
    return tmp_path


def call(home, operation: str, **request):
    return autoscaling_api.call(home, operation, request)


def register(home, low: int = 1, high: int = 10, **extra) -> None:
    call(home, "RegisterScalableTarget", **KEY, MinCapacity=low, MaxCapacity=high, **extra)


def target_tracking(home, name: str = "tt", target: float = 100.0, **config) -> dict:
    config = {"TargetValue": target, **TT, **config}
    return call(
        home,
        "PutScalingPolicy",
        **KEY,
        PolicyName=name,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={k: v for k, v in config.items() if v is not None},
    )


def step_policy(home, name: str, steps: list[dict], kind: str = "ChangeInCapacity", **config) -> dict:
    return call(
        home,
        "PutScalingPolicy",
        **KEY,
        PolicyName=name,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={"AdjustmentType": kind, "StepAdjustments": steps, **config},
    )


def run(scaler: Scaler, capacity: FakeCapacity, start: datetime, minutes: int) -> dict[int, list[int]]:
    """Tick once a minute (a second after each boundary) for ``minutes``; the capacities set at each."""
    changes: dict[int, list[int]] = {}
    for minute in range(1, minutes + 1):
        now = start + minute * MINUTE + timedelta(seconds=1)
        capacity.clock = now.timestamp()
        before = len(capacity.sets)
        scaler.tick(now)
        if len(capacity.sets) > before:
            changes[minute] = [n for n, _ in capacity.sets[before:]]
    return changes


# -- bad input ------------------------------------------------------------------------------------------------

BAD_TARGETS = [
    ({"ResourceId": "endpoint/ep"}, "endpoint/ep"),
    ({"ResourceId": "service/default/web-app"}, "service/default/web-app"),
    ({"ResourceId": "endpoint/bad_name!/variant/AllTraffic"}, "endpoint/bad_name!/variant/AllTraffic"),
    (
        {"ScalableDimension": "sagemaker:variant:DesiredProvisionedConcurrency"},
        "sagemaker:variant:DesiredProvisionedConcurrency",
    ),
    ({"ScalableDimension": "ecs:service:DesiredCount"}, "ecs:service:DesiredCount"),
    ({"ScalableDimension": "not-a-dimension"}, "not-a-dimension"),
    ({"ServiceNamespace": "ecs"}, "'ecs'"),
    ({"MinCapacity": 5, "MaxCapacity": 2}, "MinCapacity 5 cannot be greater than MaxCapacity 2"),
    ({"MinCapacity": -1}, "MinCapacity -1"),
    ({"MaxCapacity": "ten"}, "MaxCapacity"),
]


@pytest.mark.parametrize(("change", "named"), BAD_TARGETS)
def test_register_refuses_bad_targets_naming_the_value(home, change, named):
    request = {**KEY, "MinCapacity": 1, "MaxCapacity": 4, **change}
    with pytest.raises(ValidationException) as err:
        autoscaling_api.call(home, "RegisterScalableTarget", request)
    assert named in str(err.value)
    assert Records(home).read().targets == []


def test_a_new_target_needs_min_and_max_and_an_update_keeps_what_is_not_given(home):
    with pytest.raises(ValidationException, match="MinCapacity and MaxCapacity are required"):
        call(home, "RegisterScalableTarget", **KEY, MaxCapacity=3)
    register(home, 1, 3)
    call(
        home,
        "RegisterScalableTarget",
        **KEY,
        MaxCapacity=6,
        SuspendedState={"ScheduledScalingSuspended": True},
    )
    [target] = call(home, "DescribeScalableTargets", ServiceNamespace="sagemaker")["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 6)
    assert target["SuspendedState"] == {
        "DynamicScalingInSuspended": False,
        "DynamicScalingOutSuspended": False,
        "ScheduledScalingSuspended": True,
    }
    with pytest.raises(ValidationException, match="MinCapacity 7 cannot be greater than MaxCapacity 6"):
        call(home, "RegisterScalableTarget", **KEY, MinCapacity=7)


def test_register_with_the_runtime_refuses_a_missing_variant_and_clamps_at_once(home):
    capacity = FakeCapacity(1)
    other = {**KEY, "ResourceId": "endpoint/ep/variant/Canary", "MinCapacity": 1, "MaxCapacity": 2}
    with pytest.raises(ValidationException, match="endpoint/ep/variant/Canary"):
        autoscaling_api.call(home, "RegisterScalableTarget", other, capacity=capacity)
    autoscaling_api.call(
        home, "RegisterScalableTarget", {**KEY, "MinCapacity": 3, "MaxCapacity": 5}, capacity=capacity
    )
    assert capacity.sets == [(3, "minimum capacity was set to 3")]


def test_suspended_dynamic_scaling_out_holds_policies(home):
    start = _start_of_tomorrow()
    register(home, 1, 10, SuspendedState={"DynamicScalingOutSuspended": True})
    target_tracking(home)
    capacity = FakeCapacity(1)
    assert run(Scaler(home, Load(capacity, [(start, 500.0)]), capacity), capacity, start, 5) == {}
    register(home, SuspendedState={"DynamicScalingOutSuspended": False})
    assert run(Scaler(home, Load(capacity, [(start, 500.0)]), capacity), capacity, start + 5 * MINUTE, 1) == {
        1: [5]
    }


BAD_SCHEDULES = [
    "cron(0 8 * * * *)",  # neither day field is '?'
    "cron(0 8 ? * ? *)",  # both are
    "cron(0 8 * *)",  # four fields
    "cron(61 8 * * ? *)",
    "cron(0 24 * * ? *)",
    "cron(0 8 32 * ? *)",
    "cron(0 8 ? * 8 *)",  # AWS's days of the week are 1-7
    "cron(0 8 ? * MON#6 *)",
    "cron(0 8 ? FOO * *)",
    "cron(0 8 LW * ? *)",
    "cron(0 8 * * ? 2300)",
    "cron(0/0 8 * * ? *)",
    "rate(0 minutes)",
    "rate(5 weeks)",
    "rate(five minutes)",
    "at(2030-13-01T00:00:00)",
    "at(2030-02-30T00:00:00)",
    "at(tomorrow)",
    "every day at noon",
]


@pytest.mark.parametrize("schedule", BAD_SCHEDULES)
def test_put_scheduled_action_refuses_bad_expressions_naming_them(home, schedule):
    register(home)
    with pytest.raises(ValidationException) as err:
        call(
            home,
            "PutScheduledAction",
            **KEY,
            ScheduledActionName="a",
            Schedule=schedule,
            ScalableTargetAction={"MinCapacity": 2},
        )
    assert schedule in str(err.value)
    assert Records(home).read().scheduled == []


@pytest.mark.parametrize(
    ("request_", "named"),
    [
        ({"Timezone": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
        (
            {"ScalableTargetAction": {"MinCapacity": 4, "MaxCapacity": 2}},
            "MinCapacity 4 cannot be greater than MaxCapacity 2",
        ),
        ({"ScalableTargetAction": {}}, "ScalableTargetAction"),
        ({"ScheduledActionName": "a:b"}, "a:b"),  # the model's pattern: no ':', '/' or '|'
        ({"ResourceId": "endpoint/other/variant/AllTraffic"}, "endpoint/other/variant/AllTraffic"),
    ],
)
def test_put_scheduled_action_refuses_other_bad_members(home, request_, named):
    register(home)
    request = {
        **KEY,
        "ScheduledActionName": "a",
        "Schedule": "rate(1 hour)",
        "ScalableTargetAction": {"MinCapacity": 2},
    }
    with pytest.raises((ValidationException, ObjectNotFoundException)) as err:
        autoscaling_api.call(home, "PutScheduledAction", {**request, **request_})
    assert named in str(err.value)


BAD_POLICIES = [
    (
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {"TargetValue": 0, **TT},
        },
        "TargetValue 0",
    ),
    (
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 5,
                "PredefinedMetricSpecification": {"PredefinedMetricType": "ECSServiceAverageCPUUtilization"},
            },
        },
        "ECSServiceAverageCPUUtilization",
    ),
    (
        {
            "PolicyType": "TargetTrackingScaling",
            "TargetTrackingScalingPolicyConfiguration": {
                "TargetValue": 5,
                **TT,
                "CustomizedMetricSpecification": {
                    "MetricName": "CPUUtilization",
                    "Namespace": "x",
                    "Statistic": "Average",
                },
            },
        },
        "Exactly one of",
    ),
    ({"PolicyType": "PredictiveScaling"}, "PredictiveScaling"),
    ({"PolicyType": "StepScaling"}, "StepScalingPolicyConfiguration"),
    (
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": {"AdjustmentType": "ChangeInCapacity", "StepAdjustments": []},
        },
        "At least one step adjustment",
    ),
    (
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ChangeInCapacity",
                "StepAdjustments": [
                    {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
                    {"MetricIntervalLowerBound": 20, "ScalingAdjustment": 2},
                ],
            },
        },
        "have a gap: 10 and 20",
    ),
    (
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ChangeInCapacity",
                "StepAdjustments": [
                    {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 30, "ScalingAdjustment": 1},
                    {"MetricIntervalLowerBound": 20, "ScalingAdjustment": 2},
                ],
            },
        },
        "overlap",
    ),
    (
        {
            "PolicyType": "StepScaling",
            "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ChangeInCapacity",
                "MinAdjustmentMagnitude": 2,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
            },
        },
        "MinAdjustmentMagnitude is only supported with PercentChangeInCapacity",
    ),
]


@pytest.mark.parametrize(("request_", "named"), BAD_POLICIES)
def test_put_scaling_policy_refuses_bad_configurations(home, request_, named):
    register(home)
    with pytest.raises(ValidationException) as err:
        autoscaling_api.call(home, "PutScalingPolicy", {**KEY, "PolicyName": "p", **request_})
    assert named in str(err.value)


def test_operations_on_what_is_not_registered_are_object_not_found(home):
    with pytest.raises(ObjectNotFoundException, match=f"resource ID: {RID}"):
        target_tracking(home)
    with pytest.raises(ObjectNotFoundException):
        call(home, "DeregisterScalableTarget", **KEY)
    register(home)
    with pytest.raises(ObjectNotFoundException, match="policy name: nope"):
        call(home, "DeleteScalingPolicy", **KEY, PolicyName="nope")
    with pytest.raises(ObjectNotFoundException, match="scheduled action name: nope"):
        call(home, "DeleteScheduledAction", **KEY, ScheduledActionName="nope")


# -- cron conversion ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aws", "converted"),
    [
        ("0 8 ? * MON-FRI *", "0 8 * * 1-5 0 *"),
        ("0 8 ? * 2-6 *", "0 8 * * 1-5 0 *"),  # AWS: 1 is Sunday
        ("0/15 * * * ? 2030-2035", "0/15 * * * * 0 2030-2035"),
        ("0 0 L * ? *", "0 0 L * * 0 *"),
        ("0 9 15W * ? *", "0 9 15W * * 0 *"),
        ("0 9 ? * 6L *", "0 9 * * L5 0 *"),  # the last Friday
        ("0 9 ? * 3#2 *", "0 9 * * 2#2 0 *"),  # the second Tuesday
        ("0 9 ? * L *", "0 9 * * 6 0 *"),  # the last day of the week: Saturday
        ("30 6 1,15 JAN,JUL ? *", "30 6 1,15 1,7 * 0 *"),
    ],
)
def test_aws_cron_is_converted_for_croniter(aws, converted):
    assert croniter_expression(aws) == converted


def test_cron_special_days_fall_where_aws_says():
    start = datetime(2030, 1, 1, tzinfo=UTC)

    def latest(expression: str, until: datetime) -> datetime | None:
        return parse_schedule(expression).latest(start, until, anchor=start)

    end_of_may = datetime(2030, 5, 31, 23, 0, tzinfo=UTC)
    assert latest("cron(0 9 ? * 6L *)", end_of_may) == datetime(2030, 5, 31, 9, tzinfo=UTC)  # a Friday
    assert latest("cron(0 9 ? * 2#1 *)", end_of_may) == datetime(2030, 5, 6, 9, tzinfo=UTC)  # 1st Monday
    assert latest("cron(0 9 L * ? *)", datetime(2030, 2, 28, 12, tzinfo=UTC)) == datetime(
        2030, 2, 28, 9, tzinfo=UTC
    )
    # 2030-06-15 is a Saturday: the nearest weekday is Friday the 14th
    assert latest("cron(0 9 15W * ? *)", datetime(2030, 6, 20, tzinfo=UTC)) == datetime(
        2030, 6, 14, 9, tzinfo=UTC
    )


# -- target tracking -------------------------------------------------------------------------------------------


def test_target_tracking_scales_out_after_three_high_minutes_and_stops_at_max(home):
    start = _start_of_tomorrow()
    register(home, 1, 4)
    answer = target_tracking(home, ScaleOutCooldown=0)
    assert [a["AlarmName"].split("-Alarm")[1][:4] for a in answer["Alarms"]] == ["High", "Low-"]
    assert answer["Alarms"][0]["AlarmName"].startswith(f"TargetTracking-{RID}-AlarmHigh-")
    capacity = FakeCapacity(1)
    load = Load(capacity, [(start, 250.0), (start + 6 * MINUTE, 1000.0)])
    scaler = Scaler(home, load, capacity)

    changes = run(scaler, capacity, start, 12)

    # 250 per instance > 100 for 3 minutes: ceil(1 × 250 / 100) = 3; from minute 6, 1000 calls for 10: Max 4
    assert changes == {3: [3], 9: [4]}
    assert capacity.sets[0][1].startswith(f"monitor alarm TargetTracking-{RID}-AlarmHigh-")
    assert capacity.sets[0][1].endswith("in state ALARM triggered policy tt")
    assert ("InvocationsPerInstance", "Sum") == load.queries[0][:2]
    activities = call(home, "DescribeScalingActivities", ServiceNamespace="sagemaker")["ScalingActivities"]
    assert [a["Description"] for a in activities] == [
        "Setting desired instance count to 4.",
        "Setting desired instance count to 3.",
    ]
    assert activities[0]["StatusCode"] == "Successful"
    # at Max with the metric still high: one not-scaled activity, not one a minute
    every = call(
        home, "DescribeScalingActivities", ServiceNamespace="sagemaker", IncludeNotScaledActivities=True
    )
    not_scaled = [a for a in every["ScalingActivities"] if a.get("NotScaledReasons")]
    assert [a["NotScaledReasons"] for a in not_scaled] == [
        [{"Code": "AlreadyAtMaxCapacity", "CurrentCapacity": 4, "MaxCapacity": 4}]
    ]


@pytest.mark.parametrize(("cooldown_s", "second_scale_out_minute"), [(0, 4), (600, 7)])
def test_scale_out_cooldown_waits_for_data_points_of_the_new_capacity(
    home, cooldown_s, second_scale_out_minute
):
    start = _start_of_tomorrow()
    register(home, 1, 20)
    target_tracking(home, ScaleOutCooldown=cooldown_s)
    capacity = FakeCapacity(1)
    load = Load(capacity, [(start, 250.0), (start + 3 * MINUTE, 900.0)])

    changes = run(Scaler(home, load, capacity), capacity, start, 8)

    # minute 3: 1 → 3; then 900 / 3 = 300 per instance: 9 at once without a cooldown; with one, after 3 data
    # points that all began after the scale-out (minutes 4-6, complete at minute 7)
    assert changes == {3: [3], second_scale_out_minute: [9]}


def test_target_tracking_scales_in_after_fifteen_low_minutes_never_below_min(home):
    start = _start_of_tomorrow()
    register(home, 2, 10)
    target_tracking(home)
    capacity = FakeCapacity(8)
    load = Load(capacity, [(start, 400.0)])  # 50 per instance: below 90% of 100

    changes = run(Scaler(home, load, capacity), capacity, start, 16)

    assert changes == {15: [4]}  # ceil(8 × 50 / 100)
    assert "AlarmLow" in capacity.sets[0][1]
    capacity2 = FakeCapacity(8)
    home2 = home / "second"
    register(home2, 6, 10)
    target_tracking(home2)
    assert run(Scaler(home2, Load(capacity2, [(start, 400.0)]), capacity2), capacity2, start, 16) == {15: [6]}


@pytest.mark.parametrize(
    ("cooldown_s", "expected"), [(0, {15: [4], 16: [2], 17: [1]}), (300, {15: [4], 20: [2]})]
)
def test_scale_in_cooldown_holds_the_next_scale_in(home, cooldown_s, expected):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    target_tracking(home, ScaleInCooldown=cooldown_s)
    capacity = FakeCapacity(8)
    load = Load(capacity, [(start, 400.0), (start + 15 * MINUTE, 40.0)])

    changes = run(Scaler(home, load, capacity), capacity, start, 21)

    # then 40 / 4 = 10 per instance, and the window still holds 50s: ceil(4 × 50 / 100) = 2, then 1
    assert changes == expected


def test_disable_scale_in_keeps_capacity_and_has_no_low_alarm(home):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    answer = target_tracking(home, DisableScaleIn=True)
    assert [a["AlarmName"] for a in answer["Alarms"] if "AlarmLow" in a["AlarmName"]] == []
    capacity = FakeCapacity(8)
    assert run(Scaler(home, Load(capacity, [(start, 40.0)]), capacity), capacity, start, 20) == {}


def test_no_data_points_means_no_scaling_and_a_scaled_in_target_can_reach_zero_only_with_min_zero(home):
    start = _start_of_tomorrow()
    register(home, 0, 4)
    target_tracking(home)
    capacity = FakeCapacity(2)
    assert run(Scaler(home, lambda *args: None, capacity), capacity, start, 20) == {}
    later = start + 20 * MINUTE
    assert run(Scaler(home, Load(capacity, [(later, 0.0)]), capacity), capacity, later, 16) == {15: [0]}


def test_customized_metric_and_short_periods(home):
    """period_s shrinks every AWS minute: data points, windows and cooldowns (300 s = 5 periods)."""
    start = _start_of_tomorrow()
    register(home, 1, 10)
    target_tracking(
        home,
        target=50.0,
        CustomizedMetricSpecification={
            "MetricName": "CPUUtilization",
            "Namespace": "/aws/sagemaker/Endpoints",
            "Statistic": "Average",
        },
        PredefinedMetricSpecification=None,
    )
    capacity = FakeCapacity(2)
    load = Load(capacity, [(start, 0.0)], CPUUtilization=80.0)
    scaler = Scaler(home, load, capacity, period_s=0.2)
    seen = []
    for i in range(1, 40):
        now = start + timedelta(seconds=0.2 * i + 0.01)
        capacity.clock = now.timestamp()
        scaler.tick(now)
        seen.append(capacity.counts[-1])
    assert load.queries[0][:2] == ("CPUUtilization", "Average")
    assert round((load.queries[0][3] - load.queries[0][2]).total_seconds(), 6) == 0.2
    # ceil(2 × 80 / 50) = 4 at once (the metric had data before); the CPU stays at 80, so it goes on each
    # time 3 periods measured after the last scale-out say so: ceil(4 × 1.6) = 7, then 12, Max 10
    assert seen[:9] == [4, 4, 4, 4, 7, 7, 7, 7, 10]


def test_all_target_tracking_policies_must_be_ready_to_scale_in(home):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    target_tracking(home, "invocations")
    target_tracking(
        home,
        "cpu",
        target=50.0,
        CustomizedMetricSpecification={
            "MetricName": "CPUUtilization",
            "Namespace": "x",
            "Statistic": "Average",
        },
        PredefinedMetricSpecification=None,
    )
    capacity = FakeCapacity(8)
    busy_cpu = Load(capacity, [(start, 400.0)], CPUUtilization=49.0)
    assert run(Scaler(home, busy_cpu, capacity), capacity, start, 16) == {}


# -- step scaling ----------------------------------------------------------------------------------------------

OUT_STEPS = [
    {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 50, "ScalingAdjustment": 1},
    {"MetricIntervalLowerBound": 50, "MetricIntervalUpperBound": 100, "ScalingAdjustment": 2},
    {"MetricIntervalLowerBound": 100, "ScalingAdjustment": 3},
]


@pytest.mark.parametrize(
    ("difference", "upper_inclusive", "adjustment"),
    [
        (0, False, 1),
        (49.9, False, 1),
        (50, False, 2),
        (99, False, 2),
        (100, False, 3),
        (1e9, False, 3),
        (-1, False, None),
    ],
)
def test_pick_step_by_metric_band(difference, upper_inclusive, adjustment):
    step = pick_step(OUT_STEPS, difference, upper_inclusive)
    assert (step or {}).get("ScalingAdjustment") == adjustment


def test_pick_step_below_the_threshold_includes_the_upper_bound():
    steps = [
        {"MetricIntervalUpperBound": -10, "ScalingAdjustment": -2},
        {"MetricIntervalLowerBound": -10, "MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
    ]
    assert pick_step(steps, 0, True)["ScalingAdjustment"] == -1
    assert pick_step(steps, -10, True)["ScalingAdjustment"] == -2


@pytest.mark.parametrize(
    ("kind", "current", "adjustment", "magnitude", "expected"),
    [
        ("ChangeInCapacity", 4, 3, None, 7),
        ("ChangeInCapacity", 4, -3, None, 1),
        ("ExactCapacity", 4, 9, None, 9),
        ("PercentChangeInCapacity", 10, 25, None, 12),  # 2.5 → 2
        ("PercentChangeInCapacity", 4, 10, None, 5),  # 0.4 → 1
        ("PercentChangeInCapacity", 4, -10, None, 3),  # -0.4 → -1
        ("PercentChangeInCapacity", 10, -67, None, 4),  # -6.7 → -6
        ("PercentChangeInCapacity", 4, 25, 2, 6),  # the API docs' example: 25% of 4 is 1, at least 2
        ("PercentChangeInCapacity", 10, 200, None, 30),  # PutScalingPolicy docs: 200% of 10 scales out to 30
    ],
)
def test_adjustment_types(kind, current, adjustment, magnitude, expected):
    assert adjusted_capacity(kind, current, adjustment, magnitude) == expected


ALARM = {
    "MetricName": "Invocations",
    "Statistic": "Sum",
    "Period": 60,
    "EvaluationPeriods": 1,
    "Threshold": 100,
}


@pytest.mark.parametrize(
    ("kind", "adjustments", "invocations", "magnitude", "expected"),
    [
        ("ChangeInCapacity", (1, 2, 3), 120.0, None, 5),
        ("ChangeInCapacity", (1, 2, 3), 160.0, None, 6),
        ("ChangeInCapacity", (1, 2, 3), 250.0, None, 7),
        ("ChangeInCapacity", (1, 2, 3), 90.0, None, 4),  # not breaching
        ("PercentChangeInCapacity", (10, 50, 100), 120.0, None, 5),
        ("PercentChangeInCapacity", (10, 50, 100), 120.0, 2, 6),
        ("PercentChangeInCapacity", (10, 50, 100), 180.0, None, 6),
        ("ExactCapacity", (6, 8, 9), 150.0, None, 8),
        ("ExactCapacity", (6, 8, 9), 101.0, None, 6),
    ],
)
def test_step_scaling_applies_the_step_of_the_metric_band(
    home, kind, adjustments, invocations, magnitude, expected
):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    steps = [dict(s, ScalingAdjustment=a) for s, a in zip(OUT_STEPS, adjustments, strict=True)]
    extra = {"MinAdjustmentMagnitude": magnitude} if magnitude else {}
    arn = step_policy(home, "out", steps, kind, **extra)["PolicyARN"]
    put_alarm(
        home, arn, {**ALARM, "AlarmName": "busy", "ComparisonOperator": "GreaterThanOrEqualToThreshold"}
    )
    capacity = FakeCapacity(4)

    run(Scaler(home, Load(capacity, [(start, invocations)]), capacity), capacity, start, 1)

    assert capacity.counts[-1] == expected
    if expected != 4:
        assert capacity.sets[0][1] == "monitor alarm busy in state ALARM triggered policy out"


def test_step_scaling_in_with_a_less_than_alarm_over_several_periods(home):
    start = _start_of_tomorrow()
    register(home, 2, 10)
    step_policy(
        home,
        "in",
        [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": -50}],
        "PercentChangeInCapacity",
        Cooldown=0,
    )
    alarm = {**ALARM, "Period": 120, "EvaluationPeriods": 3, "DatapointsToAlarm": 2, "Threshold": 20}
    put_alarm(home, "in", {**alarm, "ComparisonOperator": "LessThanThreshold"})
    capacity = FakeCapacity(8)

    changes = run(Scaler(home, Load(capacity, [(start, 5.0)]), capacity), capacity, start, 12)

    # 2-minute data points, 2 of the last 3 below 20: first at minute 4; then every data point, down to Min 2
    assert changes == {4: [4], 6: [2]}
    [policy] = call(home, "DescribeScalingPolicies", ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["Alarms"][0]["AlarmName"] == "in-alarm"


def test_step_cooldown_counts_the_capacity_added_by_the_scale_out_that_started_it(home):
    """AWS's example: +2, then during the cooldown a +3 step adds only 1."""
    start = _start_of_tomorrow()
    register(home, 1, 20)
    steps = [
        {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 50, "ScalingAdjustment": 2},
        {"MetricIntervalLowerBound": 50, "ScalingAdjustment": 3},
    ]
    step_policy(home, "out", steps, Cooldown=600)
    put_alarm(home, "out", {**ALARM, "ComparisonOperator": "GreaterThanThreshold"})
    capacity = FakeCapacity(2)
    load = Load(capacity, [(start, 120.0), (start + MINUTE, 160.0), (start + 2 * MINUTE, 120.0)])

    changes = run(Scaler(home, load, capacity), capacity, start, 12)

    # minute 1: +2 → 4; minute 2: +3 from 2 → 5; minute 3: +2 from 2 is not more; minute 11: cooldown over
    assert changes == {1: [4], 2: [5], 11: [7]}


def test_a_failed_capacity_change_is_a_failed_activity(home):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    step_policy(home, "out", OUT_STEPS, Cooldown=0)
    put_alarm(home, "out", {**ALARM, "ComparisonOperator": "GreaterThanThreshold"})
    capacity = FakeCapacity(2)
    capacity.fail = True
    run(Scaler(home, Load(capacity, [(start, 120.0)]), capacity), capacity, start, 1)
    [activity] = call(home, "DescribeScalingActivities", ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activity["StatusCode"] == "Failed"
    assert (
        activity["StatusMessage"]
        == "Failed to set desired instance count to 3. no capacity left on this machine"
    )


# -- scheduled actions -----------------------------------------------------------------------------------------


def _next_spring_forward(tz: ZoneInfo) -> datetime:
    """The next local midnight before a day whose UTC offset grows (Europe: the last Sunday of March)."""
    day = datetime.now(UTC).astimezone(tz).replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(
        days=1
    )
    while (day + timedelta(days=1)).utcoffset() <= day.utcoffset():
        day += timedelta(days=1)
    return day  # noon of the day before the change


def scheduled(home, name: str, schedule: str, **members) -> None:
    call(home, "PutScheduledAction", **KEY, ScheduledActionName=name, Schedule=schedule, **members)


def fired_at(scaler: Scaler, capacity: FakeCapacity, instants: list[datetime]) -> list[datetime]:
    """Which of the ticks ran a scheduled action."""
    fired = []
    for now in instants:
        capacity.clock = now.timestamp()
        if any(a["Cause"].startswith("scheduled action name") for a in scaler.tick(now)):
            fired.append(now)
    return fired


def test_cron_in_a_timezone_fires_at_local_time_across_dst(home):
    berlin = ZoneInfo("Europe/Berlin")
    day_before = _next_spring_forward(berlin)
    register(home, 1, 10)
    scheduled(
        home,
        "morning",
        "cron(0 8 * * ? *)",
        Timezone="Europe/Berlin",
        ScalableTargetAction={"MinCapacity": 2},
    )
    capacity = FakeCapacity(1)
    scaler = Scaler(home, lambda *a: None, capacity)
    eight_before = day_before.replace(hour=8).astimezone(UTC)  # CET: 07:00 UTC
    eight_after = (day_before + timedelta(days=1)).replace(hour=8).astimezone(UTC)  # CEST: 06:00 UTC
    assert eight_after - eight_before == timedelta(hours=23)
    # put long before: the first tick runs the occurrence it missed (yesterday's 08:00), once
    first = eight_before - timedelta(hours=2)
    assert fired_at(scaler, capacity, [first, first + MINUTE]) == [first]
    ticks = [eight_before - MINUTE, eight_before - timedelta(hours=1), eight_before, eight_before + MINUTE]
    ticks += [eight_after - timedelta(seconds=1), eight_after, eight_after + timedelta(hours=1)]

    assert fired_at(scaler, capacity, sorted(ticks)) == [eight_before, eight_after]
    assert eight_before.hour - eight_after.hour == 1
    [target] = call(home, "DescribeScalableTargets", ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["MinCapacity"] == 2 and capacity.counts[-1] == 2
    activities = call(home, "DescribeScalingActivities", ServiceNamespace="sagemaker")["ScalingActivities"]
    assert activities[-1]["Description"] == "Setting min capacity to 2"
    assert activities[-1]["Cause"] == "scheduled action name morning was triggered"
    assert activities[-2]["Description"] == "Setting desired instance count to 2."
    assert activities[-2]["Cause"] == "minimum capacity was set to 2"


def test_at_fires_once_and_clamps_capacity_into_the_new_range(home):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    when = start + timedelta(hours=3)
    scheduled(
        home,
        "night",
        f"at({when:%Y-%m-%dT%H:%M:%S})",
        ScalableTargetAction={"MinCapacity": 1, "MaxCapacity": 2},
    )
    capacity = FakeCapacity(5)
    scaler = Scaler(home, lambda *a: None, capacity)
    ticks = [when - timedelta(seconds=1), when, when + MINUTE, when + timedelta(days=1)]
    assert fired_at(scaler, capacity, ticks) == [when]
    assert capacity.sets == [(2, "maximum capacity was set to 2")]


def test_at_in_a_timezone(home):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    local = start.astimezone(ZoneInfo("Asia/Tokyo")).replace(tzinfo=None) + timedelta(hours=2)
    scheduled(
        home,
        "tokyo",
        f"at({local:%Y-%m-%dT%H:%M:%S})",
        Timezone="Asia/Tokyo",
        ScalableTargetAction={"MinCapacity": 3},
    )
    capacity = FakeCapacity(1)
    expected = start + timedelta(hours=2)
    assert fired_at(Scaler(home, lambda *a: None, capacity), capacity, [expected - MINUTE, expected]) == [
        expected
    ]


def test_rate_counts_from_start_time_within_end_time(home):
    start = _start_of_tomorrow()
    register(home, 1, 10)
    scheduled(
        home,
        "every5",
        "rate(5 minutes)",
        StartTime=start,
        EndTime=start + timedelta(minutes=12),
        ScalableTargetAction={"MinCapacity": 2},
    )
    capacity = FakeCapacity(1)
    ticks = [start + timedelta(minutes=m) for m in range(0, 21)]
    fired = fired_at(Scaler(home, lambda *a: None, capacity), capacity, ticks)
    assert fired == [start, start + timedelta(minutes=5), start + timedelta(minutes=10)]
    [action] = call(home, "DescribeScheduledActions", ServiceNamespace="sagemaker")["ScheduledActions"]
    assert action["StartTime"] == start.timestamp()
    assert action["EndTime"] == (start + timedelta(minutes=12)).timestamp()


def test_suspended_scheduled_scaling_does_not_run(home):
    start = _start_of_tomorrow()
    register(home, 1, 10, SuspendedState={"ScheduledScalingSuspended": True})
    scheduled(home, "every", "rate(1 minute)", StartTime=start, ScalableTargetAction={"MinCapacity": 2})
    capacity = FakeCapacity(1)
    assert fired_at(Scaler(home, lambda *a: None, capacity), capacity, [start, start + MINUTE]) == []


# -- records ---------------------------------------------------------------------------------------------------


def test_deregister_deletes_the_policies_and_scheduled_actions(home):
    register(home)
    target_tracking(home)
    scheduled(home, "a", "rate(1 day)", ScalableTargetAction={"MinCapacity": 2})
    call(home, "DeregisterScalableTarget", **KEY)
    snap = Records(home).read()
    assert (snap.targets, snap.policies, snap.scheduled) == ([], [], [])
    assert {p.name for p in (home / "hosting" / "autoscaling").iterdir()} >= {
        "targets.json",
        "policies.json",
        "scheduled.json",
    }


def test_concurrent_writers_lose_nothing(home):
    register(home)

    def put(prefix: str) -> None:
        for i in range(15):
            scheduled(home, f"{prefix}{i}", "rate(1 day)", ScalableTargetAction={"MinCapacity": 1})

    threads = [threading.Thread(target=put, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(Records(home).read().scheduled) == 30


def test_run_loops_on_the_real_clock_until_stopped(home):
    register(home, 1, 5)
    target_tracking(home, ScaleOutCooldown=0)
    capacity = FakeCapacity(1)

    def per_instance(endpoint, variant, metric, statistic, start, end):
        return 300.0

    scaler = Scaler(home, per_instance, capacity, period_s=0.05, high_periods=2)
    stop = threading.Event()
    thread = threading.Thread(target=scaler.run, args=(stop, 0.01))
    thread.start()
    deadline = time.monotonic() + 5
    while capacity.counts[-1] < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert capacity.counts[1:3] == [3, 5]  # ceil(1 × 300 / 100), then ceil(3 × 3) capped at Max 5


# -- the wire --------------------------------------------------------------------------------------------------


@pytest.fixture
def client(home) -> Iterator[Callable]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, payload = autoscaling_api.handle(
                home, self.headers.get("X-Amz-Target", ""), body
            )
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    aas = boto3.client(
        "application-autoscaling",
        endpoint_url=f"http://127.0.0.1:{server.server_address[1]}",
        region_name="eu-west-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=Config(retries={"max_attempts": 1}),
    )
    yield aas
    server.shutdown()
    server.server_close()


def test_boto3_round_trip(home, client, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    start = _start_of_tomorrow()
    arn = client.register_scalable_target(**KEY, MinCapacity=1, MaxCapacity=4)["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:eu-west-1:000000000000:scalable-target/")
    [target] = client.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[RID])[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"], target["ScalableTargetARN"]) == (1, 4, arn)
    assert isinstance(target["CreationTime"], datetime)

    tracking = client.put_scaling_policy(
        **KEY,
        PolicyName="invocations",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={"TargetValue": 100.0, **TT, "ScaleOutCooldown": 0},
    )
    assert tracking["PolicyARN"] == (
        f"arn:aws:autoscaling:eu-west-1:000000000000:scalingPolicy:{tracking['PolicyARN'].split(':')[6]}:"
        f"resource/sagemaker/{RID}:policyName/invocations"
    )
    assert [a["AlarmARN"] for a in tracking["Alarms"]] == [
        f"arn:aws:cloudwatch:eu-west-1:000000000000:alarm:{a['AlarmName']}" for a in tracking["Alarms"]
    ]
    step = client.put_scaling_policy(
        **KEY,
        PolicyName="burst",
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ExactCapacity",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 4}],
        },
    )
    assert "Alarms" not in step
    put_alarm(
        home, step["PolicyARN"], {**ALARM, "Threshold": 10_000, "ComparisonOperator": "GreaterThanThreshold"}
    )
    policies = client.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=RID)[
        "ScalingPolicies"
    ]
    assert [(p["PolicyName"], p["PolicyType"]) for p in policies] == [
        ("invocations", "TargetTrackingScaling"),
        ("burst", "StepScaling"),
    ]
    assert policies[0]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 100.0
    assert policies[1]["Alarms"][0]["AlarmName"] == "burst-alarm"
    only = client.describe_scaling_policies(ServiceNamespace="sagemaker", PolicyNames=["burst"], MaxResults=1)
    assert [p["PolicyName"] for p in only["ScalingPolicies"]] == ["burst"] and "NextToken" not in only
    page = client.describe_scaling_policies(ServiceNamespace="sagemaker", MaxResults=1)
    rest = client.describe_scaling_policies(
        ServiceNamespace="sagemaker", MaxResults=1, NextToken=page["NextToken"]
    )
    assert [p["PolicyName"] for p in page["ScalingPolicies"] + rest["ScalingPolicies"]] == [
        "invocations",
        "burst",
    ]

    client.put_scheduled_action(
        **KEY,
        ScheduledActionName="weekday-mornings",
        Schedule="cron(0 8 ? * MON-FRI *)",
        Timezone="Europe/Berlin",
        StartTime=start,
        ScalableTargetAction={"MinCapacity": 2, "MaxCapacity": 4},
    )
    [action] = client.describe_scheduled_actions(ServiceNamespace="sagemaker", ResourceId=RID)[
        "ScheduledActions"
    ]
    assert action["Schedule"] == "cron(0 8 ? * MON-FRI *)" and action["Timezone"] == "Europe/Berlin"
    assert action["StartTime"] == start and action["ScalableTargetAction"] == {
        "MinCapacity": 2,
        "MaxCapacity": 4,
    }
    assert action["ScheduledActionARN"].endswith(
        f":resource/sagemaker/{RID}:scheduledActionName/weekday-mornings"
    )

    capacity = FakeCapacity(1)
    scaler = Scaler(home, Load(capacity, [(start, 500.0)]), capacity)
    run(scaler, capacity, start, 3)
    [activity] = client.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=RID)[
        "ScalingActivities"
    ]
    assert activity["Description"] == "Setting desired instance count to 4."  # ceil(500 / 100) = 5, Max 4
    assert (
        activity["StatusCode"] == "Successful" and activity["ScalableDimension"] == KEY["ScalableDimension"]
    )
    assert activity["Cause"].endswith("in state ALARM triggered policy invocations")
    assert isinstance(activity["StartTime"], datetime)
    assert math.isclose(
        activity["StartTime"].timestamp(), (start + 3 * MINUTE + timedelta(seconds=1)).timestamp()
    )

    with pytest.raises(ClientError) as err:
        client.register_scalable_target(**{**KEY, "ResourceId": "endpoint/ep"}, MinCapacity=1, MaxCapacity=2)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "endpoint/ep" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        client.put_scheduled_action(
            **KEY,
            ScheduledActionName="x",
            Schedule="cron(0 8 * * * *)",
            ScalableTargetAction={"MinCapacity": 1},
        )
    assert "cron(0 8 * * * *)" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        client.describe_scalable_targets(ServiceNamespace="sagemaker", NextToken="garbage")
    assert err.value.response["Error"]["Code"] == "InvalidNextTokenException"

    client.delete_scheduled_action(**KEY, ScheduledActionName="weekday-mornings")
    client.delete_scaling_policy(**KEY, PolicyName="burst")
    assert [
        p["PolicyName"]
        for p in client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    ] == ["invocations"]
    assert client.describe_scheduled_actions(ServiceNamespace="sagemaker")["ScheduledActions"] == []
    with pytest.raises(ClientError) as err:
        client.delete_scaling_policy(**KEY, PolicyName="burst")
    assert err.value.response["Error"]["Code"] == "ObjectNotFoundException"
    client.deregister_scalable_target(**KEY)
    assert client.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert client.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []


def test_unknown_operations_and_bodies_on_the_wire(home):
    status, headers, body = autoscaling_api.handle(home, "AnyScaleFrontendService.PutMetricAlarm", b"{}")
    assert status == 400 and b"UnknownOperationException" in body
    status, _, body = autoscaling_api.handle(
        home, "AnyScaleFrontendService.DescribeScalableTargets", b"{not json"
    )
    assert status == 400 and b"SerializationException" in body
    status, headers, body = autoscaling_api.handle(
        home, "AnyScaleFrontendService.DescribeScalableTargets", b"{}"
    )
    assert status == 400 and b"ServiceNamespace" in body
    assert ("Content-Type", "application/x-amz-json-1.1") in headers
