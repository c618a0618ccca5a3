"""The approval rule's event pattern: our matcher, checked against moto's own EventBridge routing."""

from __future__ import annotations

import json

import boto3
import pytest

from mlops.aws import events

GROUP = "digits-classifier"
PATTERN = events.approval_event_pattern(GROUP)

CASES = [
    ("approved, our group", events.sample_state_change_event(GROUP), True),
    ("approved, another group", events.sample_state_change_event("other-models"), False),
    ("rejected, our group", events.sample_state_change_event(GROUP, status="Rejected"), False),
    ("pending, our group", events.sample_state_change_event(GROUP, status="PendingManualApproval"), False),
    ("group name only shares a prefix", events.sample_state_change_event(GROUP + "-v2"), False),
]


@pytest.mark.parametrize("label, event, expected", CASES, ids=[c[0] for c in CASES])
def test_our_matcher_on_state_change_events(label, event, expected):
    assert events.matches(PATTERN, event) is expected


def test_a_different_detail_type_does_not_match():
    event = events.sample_state_change_event(GROUP)
    event["detail-type"] = "SageMaker Model Package Group State Change"
    assert not events.matches(PATTERN, event)


def test_moto_routes_exactly_the_events_our_matcher_accepts(moto):
    """moto has no TestEventPattern, but its event bus routes with its own pattern engine."""
    sqs = boto3.client("sqs")
    url = sqs.create_queue(QueueName="approvals")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    bus = boto3.client("events")
    bus.put_rule(Name="approved", EventPattern=json.dumps(PATTERN), State="ENABLED")
    bus.put_targets(Rule="approved", Targets=[{"Id": "q", "Arn": queue_arn}])
    for label, event, _ in CASES:
        entry = {
            "Source": event["source"],
            "DetailType": event["detail-type"],
            "Detail": json.dumps(event["detail"]),
        }
        entry["Resources"] = event["resources"]
        assert bus.put_events(Entries=[entry])["FailedEntryCount"] == 0, label
    received = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get(
            "Messages", []
        )
        if not msgs:
            break
        received += [json.loads(m["Body"]) for m in msgs]
    routed = sorted(
        m["detail"]["ModelPackageGroupName"] + "/" + m["detail"]["ModelApprovalStatus"] for m in received
    )
    ours = sorted(
        e["detail"]["ModelPackageGroupName"] + "/" + e["detail"]["ModelApprovalStatus"]
        for _, e, _ in CASES
        if events.matches(PATTERN, e)
    )
    assert routed == ours == [f"{GROUP}/Approved"]


def test_target_parameters_carry_the_package_arn_from_the_event():
    event = events.sample_state_change_event(GROUP, version=7)
    resolved = events.resolve_parameters(events.approval_pipeline_parameters(), event)
    assert resolved == [{"Name": "ModelPackageArn", "Value": event["detail"]["ModelPackageArn"]}]
    assert resolved[0]["Value"].endswith(f"model-package/{GROUP}/7")


OPERATOR_CASES = [
    ({"a": [{"prefix": "dig"}]}, {"a": "digits"}, True),
    ({"a": [{"prefix": "dig"}]}, {"a": "xdigits"}, False),
    ({"a": [{"suffix": "its"}]}, {"a": "digits"}, True),
    ({"a": [{"anything-but": ["Rejected"]}]}, {"a": "Approved"}, True),
    ({"a": [{"anything-but": ["Rejected"]}]}, {"a": "Rejected"}, False),
    ({"a": [{"anything-but": {"prefix": "x"}}]}, {"a": "xy"}, False),
    ({"a": [{"exists": True}]}, {"a": 1}, True),
    ({"a": [{"exists": False}]}, {"b": 1}, True),
    ({"a": [{"exists": False}]}, {"a": 1}, False),
    ({"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 5}, True),
    ({"a": [{"numeric": [">", 0, "<=", 5]}]}, {"a": 6}, False),
    ({"a": [{"numeric": [">", 0]}]}, {"a": "6"}, False),
    ({"a": [{"equals-ignore-case": "APPROVED"}]}, {"a": "approved"}, True),
    ({"a": [{"wildcard": "model-*/1"}]}, {"a": "model-x/1"}, True),
    ({"a": ["x", "y"]}, {"a": ["z", "y"]}, True),
    ({"a": [5]}, {"a": "5"}, False),
    ({"a": [None]}, {"a": None}, True),
    ({"a": ["x"]}, {}, False),
    ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "y"}, True),
    ({"$or": [{"a": ["x"]}, {"b": ["y"]}]}, {"b": "z"}, False),
    ({"d": {"e": ["1"]}}, {"d": "flat"}, False),
]


@pytest.mark.parametrize("pattern, event, expected", OPERATOR_CASES)
def test_matcher_operators(pattern, event, expected):
    assert events.matches(pattern, event) is expected


@pytest.mark.parametrize("pattern", [{"a": "not-a-list"}, {"a": [{"regex": "x"}]}])
def test_matcher_rejects_patterns_it_cannot_judge(pattern):
    with pytest.raises(ValueError, match="event pattern"):
        events.matches(pattern, {"a": "x"})
