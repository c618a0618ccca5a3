"""Approval -> local deploy on real parts: a real `mlops run` trains the model, real endpoints serve it.

One training run for the module (about 60-90 s); every other version is registered from its artifacts, one of
them deliberately broken (all weights zero: it answers every digit with the same class), so the smoke test
rejects it and the version already serving keeps answering.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from mlops.aws.events import approval_event_pattern, matches
from mlops.cli.main import main
from mlops.local.handlers.callback import Callbacks
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home
from mlops.serving import supervisor
from tests.project import ROOT as PROJECT_ROOT

pytestmark = pytest.mark.slow

GROUP = "digits-classifier"
PRODUCTION, STAGING = "digits-production", "digits-staging"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home with one trained, registered (PendingManualApproval) version; endpoints stopped at the end."""
    root = tmp_path_factory.mktemp("approval-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS__ENDPOINTS__STAGING__LOCAL_PORT", str(supervisor.free_port()))
        mp.setenv("MLOPS__ENDPOINTS__PRODUCTION__LOCAL_PORT", str(supervisor.free_port()))
        mp.delenv("MLOPS_ENV", raising=False)
        assert main(["run", "--home", str(root)]) == 0
        yield root
        for endpoint in supervisor.list_endpoints(home=root):
            supervisor.stop_endpoint(endpoint.name, home=root)


def cli(capsys, home, *args) -> tuple[int, str]:
    try:
        code = main(["models", *args, "--home", str(home)])
    except SystemExit as exit_:  # argparse refuses missing required options itself
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def show(capsys, home, version: str) -> dict:
    code, out = cli(capsys, home, "show", version, "--format", "json")
    assert code == 0, out
    return json.loads(out)


def register_copy(home: Path, *, broken: bool = False) -> str:
    """A new version of the trained package; ``broken`` zeroes the weights inside its model.tar.gz."""
    h = Home.open(home)
    first = h.registry.list(group=GROUP)[0]
    url = first["model_data_url"]
    if broken:
        store = S3Store(h.s3_root)
        work = home / "broken-model"
        with tarfile.open(store.path(url)) as tar:
            tar.extractall(work, filter="data")
        state = torch.load(work / "model.pth", weights_only=True)
        torch.save({k: torch.zeros_like(v) for k, v in state.items()}, work / "model.pth")
        url = url.replace("/output/model.tar.gz", "-broken/output/model.tar.gz")
        packed = home / "broken-model.tar.gz"
        with tarfile.open(packed, "w:gz") as tar:
            for item in sorted(work.iterdir()):
                tar.add(item, arcname=item.name)
        store.put_file(url, packed)
    keep = (
        "approval_status",
        "image",
        "content_types",
        "response_types",
        "metrics",
        "execution_id",
        "step",
        "request",
    )
    fields = {k: first[k] for k in keep} | {"model_data_url": url, "approval_status": "PendingManualApproval"}
    row = h.registry.register(GROUP, first["arn"].rsplit("/", 2)[0], **fields)
    return f"{GROUP}/{row['version']}"


def known_digits(home) -> tuple[list[list[float]], list[int]]:
    """Known digits: the test split the training run wrote."""
    h = Home.open(home)
    (package,) = [p for p in h.registry.list(group=GROUP) if p["version"] == 1]
    from steps.smoke_test.gate import test_split_uri

    directory = S3Store(h.s3_root).path(test_split_uri(h, package["execution_id"]))
    rows, labels = [], []
    for path in sorted(directory.rglob("*.csv")):
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)
            at = header.index("label")
            for record in reader:
                labels.append(int(float(record[at])))
                rows.append([float(v) for i, v in enumerate(record) if i != at])
    return rows[:50], labels[:50]


def production_accuracy(home) -> float:
    rows, labels = known_digits(home)
    result = supervisor.invoke(PRODUCTION, json.dumps({"instances": rows}).encode(), home=home)
    assert result.status == 200, result.body
    predicted = [p["label"] for p in json.loads(result.body)["predictions"]]
    return sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)


@pytest.fixture(scope="module")
def deployed(home):
    """Version 1 approved through the CLI, which deploys it to staging and production."""
    code = main(
        ["models", "approve", f"{GROUP}/1", "--reason", "first model", "--by", "alice", "--home", str(home)]
    )
    assert code == 0
    return home


def test_approve_deploys_and_production_predicts_known_digits(deployed, capsys):
    home = deployed
    assert production_accuracy(home) >= 0.9
    assert supervisor.get_endpoint(PRODUCTION, home=home).active.version == f"{GROUP}/1"
    assert supervisor.get_endpoint(STAGING, home=home).status == supervisor.IN_SERVICE
    doc = show(capsys, home, f"{GROUP}/1")
    assert doc["approval_status"] == "Approved"
    (deployment,) = doc["deployments"]
    assert deployment["status"] == "Succeeded"
    # the compiled model-deploy DAG, run by the local executor
    assert [s["name"] for s in deployment["steps"]] == [
        "CreateModel", "StagingEndpointConfig", "StagingEndpoint", "SmokeTest", "PromoteToProduction",
        "ProductionAlarms", "ProductionEndpointConfig", "ProductionEndpoint", "ProductionAutoscaling",
    ]  # fmt: skip
    steps = {s["name"]: s for s in deployment["steps"]}
    assert steps["StagingEndpoint"]["report"]["passed"] is True  # gated before it took traffic
    assert steps["ProductionEndpoint"]["report"]["passed"] is True
    assert steps["SmokeTest"]["status"] == "Succeeded"
    assert [(a["actor"], a["action"], a["to_status"], a["reason"]) for a in doc["audit_trail"]] == [
        ("alice", "approve", "Approved", "first model")
    ]
    assert doc["lineage"]["data_outputs"]["Preprocess.test"].endswith("/preprocess/test")
    assert {"preprocess", "evaluate"} <= set(doc["lineage"]["code_bundles"])
    (event,) = [e["event"] for e in Home.open(home).events.bus(doc["arn"])]
    assert event["detail-type"] == "SageMaker Model Package State Change"
    assert matches(approval_event_pattern(GROUP), event)


def test_double_approve_is_a_noop(deployed, capsys):
    home = deployed
    generation_before = supervisor.get_endpoint(PRODUCTION, home=home).generation
    code, out = cli(capsys, home, "approve", f"{GROUP}/1", "--reason", "really sure")
    assert code == 0, out
    assert "already Approved; nothing to do" in out
    doc = show(capsys, home, f"{GROUP}/1")
    assert len(doc["deployments"]) == 1
    assert len(Home.open(home).events.bus(doc["arn"])) == 1
    assert supervisor.get_endpoint(PRODUCTION, home=home).generation == generation_before


def test_reject_deploys_nothing(deployed, capsys):
    home = deployed
    version = register_copy(home)
    code, out = cli(capsys, home, "reject", version, "--reason", "not needed")
    assert code == 0, out
    doc = show(capsys, home, version)
    assert doc["approval_status"] == "Rejected"
    assert doc["deployments"] == []
    assert version.replace("/", "-") not in {
        d.version for d in supervisor.get_endpoint(PRODUCTION, home=home).deployments
    }


def test_approving_a_rejected_version_needs_force(deployed, capsys):
    home = deployed
    version = register_copy(home)
    assert cli(capsys, home, "reject", version, "--reason", "looks odd")[0] == 0
    code, out = cli(capsys, home, "approve", version, "--reason", "changed my mind")
    assert code == 2
    assert f"model version {version} was Rejected; approving it needs --force" in out
    code, out = cli(capsys, home, "approve", version, "--reason", "checked it", "--force", "--no-deploy")
    assert code == 0, out
    assert "deploy skipped (--no-deploy)" in out
    doc = show(capsys, home, version)
    assert doc["approval_status"] == "Approved"
    assert doc["deployments"] == []
    assert [a["action"] for a in doc["audit_trail"]] == ["reject", "approve (forced)"]


@pytest.mark.parametrize("args", [("approve", "{v}"), ("reject", "{v}"), ("approve", "{v}", "--reason", " ")])
def test_approve_and_reject_need_a_reason(deployed, capsys, args):
    version = f"{GROUP}/1"
    code, out = cli(capsys, deployed, *(a.format(v=version) for a in args))
    assert code == 2
    assert "--reason" in out


def test_a_model_that_fails_the_smoke_test_is_rolled_back(deployed, capsys):
    home = deployed
    serving = supervisor.get_endpoint(PRODUCTION, home=home).active.version
    version = register_copy(home, broken=True)
    code, out = cli(capsys, home, "approve", version, "--reason", "let's try it")
    assert code == 1, out
    assert "RolledBack" in out
    doc = show(capsys, home, version)
    (deployment,) = doc["deployments"]
    assert deployment["status"] == "RolledBack"
    assert "accuracy" in deployment["reason"] and "below the floor" in deployment["reason"]
    assert "previous version keeps serving" in deployment["reason"]
    assert supervisor.get_endpoint(PRODUCTION, home=home).active.version == serving
    assert supervisor.get_endpoint(STAGING, home=home).active.version == serving
    assert production_accuracy(home) >= 0.9


def test_approving_a_newer_good_version_replaces_production_blue_green(deployed, capsys):
    home = deployed
    before = supervisor.get_endpoint(PRODUCTION, home=home).active.version
    version = register_copy(home)
    code, out = cli(capsys, home, "approve", version, "--reason", "retrained on fresh data")
    assert code == 0, out
    label = version
    production = supervisor.get_endpoint(PRODUCTION, home=home)
    assert production.active.version == label
    assert production.deployments[-1].status == "Succeeded"
    assert production.deployments[-1].reason == f"replaced {before}"
    assert production_accuracy(home) >= 0.9


def approve_in_background(home: Path, version: str) -> subprocess.Popen:
    """``mlops models approve`` in a second process, with the promotion gate on for this environment."""
    env = {**os.environ, "MLOPS__ENDPOINTS__PROMOTION_GATE__ENABLED": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "mlops.cli", "models", "approve", version, "--reason", "retrained", "--by", "alice",
         "--home", str(home)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_at_gate(home: Path, approving: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        waiting = [r for r in Callbacks(Home.open(home)).waiting() if r["step"] == "ApproveProduction"]
        if waiting:
            return waiting[0]
        assert approving.poll() is None, approving.stdout.read()
        time.sleep(0.2)
    approving.kill()
    raise AssertionError("the deploy never reached the promotion gate")


def test_the_promotion_gate_holds_production_until_promote(deployed, capsys):
    home = deployed
    code, out = cli(capsys, home, "promote", f"{GROUP}/1", "--reason", "nothing waits")
    assert code != 0 and f"no deployment of {GROUP}/1 waits at ApproveProduction" in out
    before = supervisor.get_endpoint(PRODUCTION, home=home).active.version
    version = register_copy(home)
    approving = approve_in_background(home, version)
    row = wait_at_gate(home, approving)
    assert row["message"]["arguments"]["ModelPackageArn"].endswith(f"model-package/{version}")
    # staging already serves the new version; production does not until a person promotes it
    assert supervisor.get_endpoint(STAGING, home=home).active.version == version
    time.sleep(1)
    assert supervisor.get_endpoint(PRODUCTION, home=home).active.version == before

    code, out = cli(capsys, home, "promote", version, "--reason", "staging looks right", "--by", "bob")
    assert code == 0, out
    assert "the deploy goes on to production" in out
    output, _ = approving.communicate(timeout=240)
    assert approving.returncode == 0, output
    assert "waiting for a person: mlops models promote" in output
    assert supervisor.get_endpoint(PRODUCTION, home=home).active.version == version
    doc = show(capsys, home, version)
    assert [(a["actor"], a["action"]) for a in doc["audit_trail"]] == [
        ("alice", "approve"),
        ("bob", "promote"),
    ]
    assert doc["deployments"][-1]["status"] == "Succeeded"
    gate = {s["name"]: s for s in doc["deployments"][-1]["steps"]}["ApproveProduction"]
    assert gate["status"] == "Succeeded"


def test_a_rejected_promotion_leaves_staging_serving_and_production_unchanged(deployed, capsys):
    home = deployed
    before = supervisor.get_endpoint(PRODUCTION, home=home).active.version
    generation = supervisor.get_endpoint(PRODUCTION, home=home).generation
    version = register_copy(home)
    approving = approve_in_background(home, version)
    wait_at_gate(home, approving)
    code, out = cli(
        capsys, home, "promote", version, "--reason", "latency too high", "--by", "bob", "--reject"
    )
    assert code == 0, out
    output, _ = approving.communicate(timeout=240)
    assert approving.returncode == 1, output
    assert f"promotion of {version} rejected by bob: latency too high" in output
    production = supervisor.get_endpoint(PRODUCTION, home=home)
    assert (production.active.version, production.generation) == (before, generation)
    assert supervisor.get_endpoint(STAGING, home=home).active.version == version
    doc = show(capsys, home, version)
    assert doc["deployments"][-1]["status"] == "Failed"
    assert [a["action"] for a in doc["audit_trail"]] == ["approve", "reject-promotion"]
    assert production_accuracy(home) >= 0.9
