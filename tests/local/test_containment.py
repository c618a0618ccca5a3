"""A job sees what a container sees: hostile code tries to reach the host and every attempt must fail.

The host-side bait lives under /var/tmp, not /tmp: the sandbox's /tmp is private anyway, so bait there
would prove nothing about how the job's root is built.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import textwrap
import uuid
from pathlib import Path

import pytest

from mlops.local.runtime import run_processing_job
from mlops.project import TOOLKIT_ROOT

SECRETS = {
    "GITHUB_TOKEN": "ghp_containment",
    "HF_TOKEN": "hf_containment",
    "DATABASE_URL": "postgres://user:pw@db/containment",
    "AWS_SECRET_ACCESS_KEY": "host-aws-secret",
}

# Each attempt records "escaped: <what it got>" or "held: <why not>"; the job itself must still succeed.
HOSTILE = textwrap.dedent(
    """
    import json, os, socket, sys
    bait = json.loads(sys.argv[1])
    attempts = {}
    def attempt(name, fn):
        try:
            got = fn()
            attempts[name] = ("escaped: " + repr(got)[:200]) if got else "held: nothing there"
        except Exception as err:
            attempts[name] = "held: " + type(err).__name__
    attempt("read fake $HOME/.gitconfig", lambda: open(bait["gitconfig"]).read())
    attempt("read the real ~/.gitconfig", lambda: open(bait["real_gitconfig"]).read())
    attempt("list the fake $HOME", lambda: os.listdir(bait["home"]))
    attempt("read the home's mlops.db", lambda: open(bait["db"], "rb").read())
    attempt("list the home's executions", lambda: os.listdir(bait["executions"]))
    attempt("list another execution", lambda: os.listdir(bait["other_execution"]))
    attempt("read another execution's output", lambda: open(bait["other_file"]).read())
    attempt("read the project checkout", lambda: open(bait["checkout"] + "/README.md").read())
    attempt("list /run (host sockets)", lambda: os.listdir("/run"))
    def connect(address):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        s.connect(address)
        return s.recv(100) or "connected"
    attempt("connect to a host Unix socket", lambda: connect(bait["socket"]))
    attempt("connect to a host abstract socket", lambda: connect("\\0" + bait["abstract"]))
    for key in bait["secrets"]:
        attempt("read $" + key, lambda key=key: os.environ.get(key))
    attempt("find a secret anywhere in the environment",
            lambda: [k for k, v in os.environ.items() if v in bait["secret_values"]])
    with open(sys.argv[2] + "/attempts.json", "w") as f:
        json.dump(attempts, f, indent=1)
    """
)


@pytest.fixture
def bait(tmp_path, monkeypatch):
    """Host files, a socket and secrets a job must not reach, outside /tmp; removed afterwards."""
    root = Path("/var/tmp") / f"mlops-containment-{uuid.uuid4().hex[:12]}"
    home = root / "home"
    home.mkdir(parents=True)
    (home / ".gitconfig").write_text("[user]\n\temail = secret@example.com\n")
    mlops_home = root / "project" / ".mlops"
    other = mlops_home / "executions" / "other-execution" / "Train" / "algo-1" / "ml" / "output"
    other.mkdir(parents=True)
    (other / "data.txt").write_text("another execution's data")
    (mlops_home / "mlops.db").write_bytes(b"SQLite format 3\x00 bait")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(root / "host.sock"))
    server.listen(4)
    abstract = f"mlops-containment-{uuid.uuid4().hex}"
    abstract_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract_server.bind("\0" + abstract)
    abstract_server.listen(4)
    monkeypatch.setenv("HOME", str(home))
    for key, value in SECRETS.items():
        monkeypatch.setenv(key, value)
    try:
        yield {
            "root": root,
            "mlops_home": mlops_home,
            "args": {
                "home": str(home),
                "gitconfig": str(home / ".gitconfig"),
                "real_gitconfig": os.path.join(os.path.expanduser("~root"), ".gitconfig"),
                "db": str(mlops_home / "mlops.db"),
                "executions": str(mlops_home / "executions"),
                "other_execution": str(mlops_home / "executions" / "other-execution"),
                "other_file": str(other / "data.txt"),
                "checkout": str(TOOLKIT_ROOT),
                "socket": str(root / "host.sock"),
                "abstract": abstract,
                "secrets": sorted(SECRETS),
                "secret_values": sorted(SECRETS.values()),
            },
        }
    finally:
        server.close()
        abstract_server.close()
        shutil.rmtree(root, ignore_errors=True)


def hostile_request(store, bait_args: dict) -> dict:
    store.put_bytes("s3://b/code/hostile.py", HOSTILE.encode())
    arg = json.dumps(bait_args)
    # The preflight's limit is per item: the bait's paths travel as one JSON argument of their own.
    assert len(arg) < 1024
    return {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large"}},
        "AppSpecification": {
            "ImageUri": "img",
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/hostile.py"],
            "ContainerArguments": [arg, "/opt/ml/processing/output/result"],
        },
        "Environment": {"GREETING": "hi"},
        "ProcessingInputs": [
            {
                "InputName": "code",
                "S3Input": {
                    "S3Uri": "s3://b/code/hostile.py",
                    "LocalPath": "/opt/ml/processing/input/code",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "result",
                    "S3Output": {
                        "S3Uri": "s3://b/out/result",
                        "LocalPath": "/opt/ml/processing/output/result",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }


def run_hostile(store, bait) -> dict[str, str]:
    job_dir = bait["mlops_home"] / "executions" / "this-execution" / "Hostile"
    res = run_processing_job(
        hostile_request(store, bait["args"]), job_name="hostile-1", store=store, job_dir=job_dir
    )
    assert res.status == "Completed", res.failure_reason
    return json.loads(store.path("s3://b/out/result/attempts.json").read_text())


def test_a_hostile_job_reaches_nothing_of_the_host(store, bait, bwrap_mode):
    attempts = run_hostile(store, bait)
    assert len(attempts) == 16
    escaped = {name: outcome for name, outcome in attempts.items() if not outcome.startswith("held")}
    assert escaped == {}


def test_without_namespaces_the_environment_is_still_filtered(store, bait, monkeypatch):
    monkeypatch.setenv("MLOPS_SANDBOX", "none")
    attempts = run_hostile(store, bait)
    env_attempts = {k: v for k, v in attempts.items() if "$" in k.replace("$HOME", "") or "environment" in k}
    assert len(env_attempts) == 5
    assert all(outcome.startswith("held") for outcome in env_attempts.values()), env_attempts


HOSTILE_MODEL = """
import json, os


def model_fn(model_dir):
    seen = {key: os.environ.get(key) for key in SECRET_KEYS}
    seen["HOME"] = os.environ.get("HOME")
    seen["leaked"] = sorted(k for k, v in os.environ.items() if v in SECRET_VALUES)
    return seen


def input_fn(body, content_type):
    return None


def predict_fn(data, model):
    return model


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
""".replace("SECRET_KEYS", repr(sorted(SECRETS))).replace("SECRET_VALUES", repr(sorted(SECRETS.values())))


def test_a_hostile_model_does_not_see_the_approvers_secrets(tmp_path, bait):
    from mlops.serving import supervisor

    model_dir = tmp_path / "models" / "hostile"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(HOSTILE_MODEL)
    home = tmp_path / "mlops"
    try:
        supervisor.start_endpoint("hostile", model_dir, supervisor.free_port(), home=home, workers=1)
        seen = json.loads(supervisor.invoke("hostile", b"{}", "application/json", home=home).body)
    finally:
        for info in supervisor.list_endpoints(home=home):
            supervisor.stop_endpoint(info.name, home=home)
    assert {key: seen[key] for key in SECRETS} == dict.fromkeys(SECRETS)
    assert seen["leaked"] == []
    assert seen["HOME"] != bait["args"]["home"] and os.access(seen["HOME"], os.W_OK)


def test_a_runaway_allocation_fails_like_an_out_of_memory_container(store, tmp_path, mode):
    import time

    from mlops.local.runtime import instances

    limit = instances.limits_for("ml.t3.medium").memory  # 4 GiB, or this machine's memory if less
    code = f"import os; print(len(os.sched_getaffinity(0)), flush=True); b = bytearray({limit + (1 << 30)})"
    req = {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.t3.medium"}},
        "AppSpecification": {"ImageUri": "img", "ContainerEntrypoint": ["python3", "-c", code]},
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }
    lines = []
    started = time.monotonic()
    res = run_processing_job(
        req,
        job_name="greedy-1",
        store=store,
        job_dir=tmp_path / "job",
        on_log=lambda h, line: lines.append(line),
    )
    assert time.monotonic() - started < 60
    assert res.status == "Failed" and "memory" in res.failure_reason.lower(), res.failure_reason
    assert str(len(instances.limits_for("ml.t3.medium").cpus)) in lines  # its CPUs: the instance's, at most
