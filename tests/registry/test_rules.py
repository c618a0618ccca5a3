"""Version references, the approval transition rules, lineage parsing and the local audit trail (no training)."""

from __future__ import annotations

import sqlite3

import pytest

from mlops.aws.events import approval_event_pattern, matches
from mlops.local.state.home import Home
from mlops.local.state.lineage import code_bundles
from mlops.registry import APPROVED, PENDING, REJECTED, ApprovalError, check_transition, parse_version
from mlops.registry.local import LocalRegistry, state_change_event

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:model-package/digits-classifier/7"


@pytest.mark.parametrize(
    ("ref", "group", "expected"),
    [
        ("digits-classifier/3", None, ("digits-classifier", 3)),
        ("3", "digits-classifier", ("digits-classifier", 3)),
        (" digits-classifier/12 ", "digits-classifier", ("digits-classifier", 12)),
        (ARN, None, ("digits-classifier", 7)),
        (ARN, "digits-classifier", ("digits-classifier", 7)),
    ],
)
def test_version_references(ref, group, expected):
    assert parse_version(ref, group) == expected


@pytest.mark.parametrize(
    ("ref", "group", "message"),
    [
        ("3", None, "give GROUP/3 or --group GROUP"),
        ("digits/x", None, "expected GROUP/N"),
        ("", None, "expected GROUP/N"),
        ("a/b/3", None, "expected GROUP/N"),
        ("digits/0", None, "versions start at 1"),
        ("other/3", "digits", "is in group 'other', not --group 'digits'"),
        (ARN, "other", "is in group 'digits-classifier'"),
        ("arn:aws:sagemaker:eu-west-1:1:model-package-group/digits", None, "expected GROUP/N"),
    ],
)
def test_bad_version_references_name_the_value(ref, group, message):
    with pytest.raises(ApprovalError) as err:
        parse_version(ref, group)
    assert message in str(err.value)
    assert err.value.exit_code == 2
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("current", "target", "force", "changes"),
    [
        (PENDING, APPROVED, False, True),
        (PENDING, REJECTED, False, True),
        (APPROVED, REJECTED, False, True),
        (APPROVED, APPROVED, False, False),
        (REJECTED, REJECTED, False, False),
        (REJECTED, APPROVED, True, True),
    ],
)
def test_transitions(current, target, force, changes):
    assert check_transition("v", current, target, "because", force) is changes


@pytest.mark.parametrize(
    ("current", "target", "reason", "message"),
    [
        (REJECTED, APPROVED, "fine now", "v was Rejected; approving it needs --force"),
        (PENDING, APPROVED, "", "--reason is required"),
        (PENDING, REJECTED, "   ", "--reason is required"),
        (APPROVED, APPROVED, "", "--reason is required"),
    ],
)
def test_refused_transitions(current, target, reason, message):
    with pytest.raises(ApprovalError, match=message.replace("-", r"\-")):
        check_transition("v", current, target, reason, force=False)


def test_code_bundles_are_read_from_the_definition_uris():
    digest = "ab" * 32
    definition = {
        "Steps": [
            {"Arguments": {"S3Uri": f"s3://b/p/code/train/{digest}/"}},
            {"Arguments": {"Entry": f"s3://b/p/code/evaluate/{'cd' * 32}/evaluate.py"}},
            {"Arguments": {"S3Uri": "s3://b/p/data/raw/"}},
        ]
    }
    assert code_bundles(definition) == {"train": digest, "evaluate": "cd" * 32}
    assert code_bundles(None) == {}


def _register(home: Home, group: str = "digits-classifier") -> dict:
    return home.registry.register(
        group,
        "arn:aws:sagemaker:eu-west-1:123456789012:model-package",
        approval_status=PENDING,
        model_data_url="s3://b/model.tar.gz",
        request={"ModelPackageGroupName": group},
    )


def test_audit_trail_records_every_decision_and_cannot_be_deleted(tmp_path):
    home = Home.open(tmp_path)
    row = _register(home)
    registry = LocalRegistry(home)
    ref = f"{row['group_name']}/{row['version']}"
    assert registry.reject(ref, "accuracy on 7s is poor", actor="bob").changed
    assert not registry.reject(ref, "still poor", actor="carol").changed
    with pytest.raises(ApprovalError, match="needs --force"):
        registry.approve(ref, "retry", actor="dave")
    change = registry.approve(ref, "7s fixed upstream", actor="erin", force=True)
    assert change.changed and change.previous == REJECTED
    trail = registry.show(ref)["audit_trail"]
    assert [(a["actor"], a["action"], a["from_status"], a["to_status"], a["reason"]) for a in trail] == [
        ("bob", "reject", PENDING, REJECTED, "accuracy on 7s is poor"),
        ("carol", "reject (no change)", REJECTED, REJECTED, "still poor"),
        ("erin", "approve (forced)", REJECTED, APPROVED, "7s fixed upstream"),
    ]
    assert home.registry.get(row["group_name"], row["version"])["approval_status"] == APPROVED
    with sqlite3.connect(home.db_path) as con, pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM model_package_audit")


def test_only_real_changes_put_a_state_change_event_on_the_local_bus(tmp_path):
    home = Home.open(tmp_path)
    row = _register(home)
    registry = LocalRegistry(home)
    ref = f"{row['group_name']}/{row['version']}"
    registry.approve(ref, "good", actor="a")
    registry.approve(ref, "good again", actor="a")
    registry.reject(ref, "regression found", actor="b")
    events = [e["event"] for e in home.events.bus(row["arn"])]
    assert [e["detail"]["ModelApprovalStatus"] for e in events] == [APPROVED, REJECTED]
    pattern = approval_event_pattern("digits-classifier")
    assert [matches(pattern, e) for e in events] == [True, False]
    assert events[0]["detail"]["ModelPackageArn"] == row["arn"]
    assert not matches(approval_event_pattern("another-group"), events[0])


def test_state_change_event_takes_region_and_account_from_the_arn(tmp_path):
    home = Home.open(tmp_path)
    row = {**_register(home), "approval_status": APPROVED}
    event = state_change_event(row)
    assert (event["region"], event["account"], event["resources"]) == (
        "eu-west-1",
        "123456789012",
        [row["arn"]],
    )
    assert event["detail"]["ModelPackageVersion"] == row["version"]


def test_unknown_version_lists_the_known_ones(tmp_path):
    home = Home.open(tmp_path)
    _register(home)
    with pytest.raises(
        ApprovalError, match=r"digits-classifier/9: not in the local registry \(known: digits-classifier/1\)"
    ):
        LocalRegistry(home).show("digits-classifier/9")
