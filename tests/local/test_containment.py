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

# Each attempt records "escaped: <what it got>" or "held: <why not>"; the code itself must still succeed.
# The same attempts run as a job (HOSTILE) and as a model's model_fn (HOSTILE_MODEL).
ATTEMPTS = textwrap.dedent(
    """
    import json, os, socket
    def run_attempts(bait):
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
        def write_home():
            with open(bait["home"] + "/planted", "w") as f:
                f.write("planted")
            return "written"
        attempt("write into the fake $HOME", write_home)
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
        def connect_tcp():
            s = socket.create_connection(("127.0.0.1", bait["tcp_port"]), timeout=2)
            return s.recv(100) or "connected"
        attempt("connect to a host TCP port", connect_tcp)
        for key in bait["secrets"]:
            attempt("read $" + key, lambda key=key: os.environ.get(key))
        attempt("find a secret anywhere in the environment",
                lambda: [k for k, v in os.environ.items() if v in bait["secret_values"]])
        return attempts
    """
)
HOSTILE = ATTEMPTS + textwrap.dedent(
    """
    import sys
    with open(sys.argv[2] + "/attempts.json", "w") as f:
        json.dump(run_attempts(json.loads(sys.argv[1])), f, indent=1)
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
    tcp_server = socket.create_server(("127.0.0.1", 0))
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
                "tcp_port": tcp_server.getsockname()[1],
                "secrets": sorted(SECRETS),
                "secret_values": sorted(SECRETS.values()),
            },
        }
    finally:
        server.close()
        abstract_server.close()
        tcp_server.close()
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
    assert len(attempts) == 18
    escaped = {name: outcome for name, outcome in attempts.items() if not outcome.startswith("held")}
    assert escaped == {}


def test_without_namespaces_the_environment_is_still_filtered(store, bait, monkeypatch):
    monkeypatch.setenv("MLOPS_SANDBOX", "none")
    attempts = run_hostile(store, bait)
    env_attempts = {k: v for k, v in attempts.items() if "$" in k.replace("$HOME", "") or "environment" in k}
    assert len(env_attempts) == 5
    assert all(outcome.startswith("held") for outcome in env_attempts.values()), env_attempts


MODEL_HANDLERS = textwrap.dedent(
    """
    BAIT = json.loads(BAIT_JSON)


    def model_fn(model_dir):
        seen = run_attempts(BAIT)
        def write_model():
            with open(os.path.join(model_dir, "planted"), "w") as f:
                f.write("planted")
            return "written"
        try:
            seen["write into the model dir"] = "escaped: " + repr(write_model())
        except OSError as err:
            seen["write into the model dir"] = "held: " + type(err).__name__
        try:
            seen["read another endpoint's state"] = "escaped: " + open(BAIT["other_endpoint"]).read()[:100]
        except OSError as err:
            seen["read another endpoint's state"] = "held: " + type(err).__name__
        return {"attempts": seen, "HOME": os.environ.get("HOME"), "home_writable": os.access(os.environ["HOME"], os.W_OK),
                "model_dir": model_dir, "port": os.environ.get("SAGEMAKER_BIND_TO_PORT")}


    def input_fn(body, content_type):
        return None


    def predict_fn(data, model):
        return model


    def output_fn(prediction, accept):
        return json.dumps(prediction), "application/json"
    """
)


def test_a_hostile_model_reaches_nothing_of_the_host(bait, bwrap_mode):
    """An approved model package runs like a serving container: none of the approver's secrets or files."""
    from mlops.serving import supervisor

    home = bait["mlops_home"]  # the endpoint's own state lives here too, beside another endpoint's
    other = home / "endpoints" / "other"
    other.mkdir(parents=True)
    (other / "state.json").write_text('{"bait": "another endpoint"}')
    model_dir = bait["root"] / "models" / "hostile"
    (model_dir / "code").mkdir(parents=True)
    args = {**bait["args"], "other_endpoint": str(other / "state.json")}
    code = ATTEMPTS + MODEL_HANDLERS.replace("BAIT_JSON", repr(json.dumps(args)))
    (model_dir / "code" / "inference.py").write_text(code)
    try:
        supervisor.start_endpoint("hostile", model_dir, supervisor.free_port(), home=home, workers=1)
        seen = json.loads(supervisor.invoke("hostile", b"{}", "application/json", home=home).body)
    finally:
        for info in supervisor.list_endpoints(home=home):
            supervisor.stop_endpoint(info.name, home=home)
    attempts = seen["attempts"]
    assert len(attempts) == 20
    assert {name: outcome for name, outcome in attempts.items() if not outcome.startswith("held")} == {}
    assert not (Path(bait["args"]["home"]) / "planted").exists()
    assert not (model_dir / "planted").exists()
    # the serving contract: the model at /opt/ml/model, port 8080 in its own network, a writable $HOME
    assert seen["model_dir"] == "/opt/ml/model" and seen["port"] == "8080"
    assert seen["HOME"] != bait["args"]["home"] and seen["home_writable"]


def test_without_namespaces_a_model_still_gets_no_secrets(tmp_path, bait, monkeypatch):
    from mlops.serving import supervisor

    monkeypatch.setenv("MLOPS_SANDBOX", "none")
    model_dir = tmp_path / "models" / "hostile"
    (model_dir / "code").mkdir(parents=True)
    args = {**bait["args"], "other_endpoint": "/nonexistent"}
    (model_dir / "code" / "inference.py").write_text(
        ATTEMPTS + MODEL_HANDLERS.replace("BAIT_JSON", repr(json.dumps(args)))
    )
    home = tmp_path / "mlops"
    try:
        supervisor.start_endpoint("hostile", model_dir, supervisor.free_port(), home=home, workers=1)
        seen = json.loads(supervisor.invoke("hostile", b"{}", "application/json", home=home).body)
    finally:
        for info in supervisor.list_endpoints(home=home):
            supervisor.stop_endpoint(info.name, home=home)
    env = {k: v for k, v in seen["attempts"].items() if "$" in k.replace("$HOME", "") or "environment" in k}
    assert len(env) == 5 and all(v.startswith("held") for v in env.values()), env
    assert seen["HOME"] != bait["args"]["home"]


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
