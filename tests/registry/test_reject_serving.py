"""Rejecting a version that serves on a local endpoint: refused with the reason, or --undeploy stops it first."""

from __future__ import annotations

import pytest

from mlops.cli.main import main
from mlops.local.state.home import Home
from mlops.registry import APPROVED, PENDING, REJECTED
from mlops.registry.local import LocalRegistry
from mlops.serving import supervisor
from tests.serving.conftest import SUM_INFERENCE, make_model_dir

GROUP = "digits-classifier"


@pytest.fixture
def serving(tmp_path):
    """Two approved versions; digits-classifier/1 serves on digits-production (a real endpoint, a cheap model)."""
    root = tmp_path / "home"
    home = Home.open(root)
    registry = LocalRegistry(home)
    for _ in range(2):
        home.registry.register(
            GROUP, "arn:aws:sagemaker:eu-west-1:123456789012:model-package", approval_status=PENDING,
            model_data_url="s3://b/model.tar.gz", request={"ModelPackageGroupName": GROUP},
        )  # fmt: skip
        registry.approve(f"{GROUP}/{_ + 1}", "looks fine", actor="alice")
    model_dir = make_model_dir(tmp_path / "models", "sum", SUM_INFERENCE)
    supervisor.start_endpoint(
        "digits-production", model_dir, supervisor.free_port(), home=root, workers=1, version=f"{GROUP}/1"
    )
    yield home
    for endpoint in supervisor.list_endpoints(home=root):
        supervisor.stop_endpoint(endpoint.name, home=root)


def cli(capsys, home: Home, *args: str) -> tuple[int, str]:
    try:
        code = main(["models", *args, "--home", str(home.root)])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def status(home: Home, version: int) -> str:
    return home.registry.get(GROUP, version)["approval_status"]


def test_rejecting_the_serving_version_is_refused_with_the_reason(capsys, serving):
    code, out = cli(capsys, serving, "reject", f"{GROUP}/1", "--reason", "bias found", "--by", "bob")
    assert code == 2, out
    assert (
        f"model version {GROUP}/1 serves on digits-production; pass --undeploy to stop it, "
        "or approve another version first"
    ) in out
    assert status(serving, 1) == APPROVED  # nothing changed, nothing written
    assert [a["action"] for a in serving.registry.audit_trail(GROUP, 1)] == ["approve"]
    endpoint = supervisor.get_endpoint("digits-production", home=serving.root)
    assert endpoint.status == "InService"
    assert supervisor.invoke("digits-production", b"[2]", home=serving.root).body == b"[2.0]"


def test_a_version_that_does_not_serve_is_rejected_as_before(capsys, serving):
    code, out = cli(capsys, serving, "reject", f"{GROUP}/2", "--reason", "not needed", "--by", "bob")
    assert code == 0 and f"model version {GROUP}/2: Approved -> Rejected" in out
    assert supervisor.get_endpoint("digits-production", home=serving.root).status == "InService"


def test_undeploy_stops_the_endpoint_then_rejects_and_both_are_audited(capsys, serving):
    code, out = cli(
        capsys, serving, "reject", f"{GROUP}/1", "--reason", "bias found", "--by", "bob", "--undeploy"
    )
    assert code == 0, out
    assert f"stopped endpoint digits-production (it served {GROUP}/1)" in out
    assert f"model version {GROUP}/1: Approved -> Rejected" in out
    assert status(serving, 1) == REJECTED
    endpoint = supervisor.get_endpoint("digits-production", home=serving.root)
    assert endpoint.status == "Stopped" and not endpoint.active.alive() and not endpoint.front.alive()
    trail = serving.registry.audit_trail(GROUP, 1)
    assert [(a["actor"], a["action"], a["to_status"]) for a in trail] == [
        ("alice", "approve", APPROVED),
        ("bob", "undeploy", APPROVED),
        ("bob", "reject", REJECTED),
    ]
    assert "stopped endpoint digits-production" in trail[1]["reason"] and "bias found" in trail[1]["reason"]
    code, out = cli(capsys, serving, "verify")
    assert code == 0 and "audit trail intact: 4 rows" in out  # 2 approvals, the stop, the rejection
    # once Stopped it serves nothing: a repeat needs no --undeploy
    code, out = cli(capsys, serving, "reject", f"{GROUP}/1", "--reason", "still biased", "--by", "bob")
    assert code == 0 and "already Rejected" in out


def test_a_missing_reason_is_refused_before_anything_is_stopped(capsys, serving):
    code, out = cli(capsys, serving, "reject", f"{GROUP}/1", "--reason", " ", "--undeploy")
    assert code == 2 and "--reason is required" in out
    assert supervisor.get_endpoint("digits-production", home=serving.root).status == "InService"


def test_undeploy_is_for_the_local_target_only(capsys, serving):
    code, out = cli(capsys, serving, "reject", f"{GROUP}/1", "--reason", "x", "--target", "aws", "--undeploy")
    assert code == 2 and "--undeploy stops local endpoints" in out
