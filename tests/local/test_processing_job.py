"""Processing jobs on real processes, in both sandbox modes: inputs, sharding, outputs, failures, limits."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
import uuid

import pytest

from mlops.local.runtime import JobRequestError, run_processing_job

# A script that knows only the container contract: /opt/ml paths, fixed unless given as arguments (the
# form that also runs in mapped-paths mode, where the executor rewrites them).
SCRIPT = textwrap.dedent(
    """
    import json, os, pathlib, socket, sys
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    config = args.get("--config", "/opt/ml/config")
    cfg = json.load(open(f"{config}/resourceconfig.json"))
    job = json.load(open(f"{config}/processingjobconfig.json"))
    inp = pathlib.Path(args.get("--input", "/opt/ml/processing/input/raw"))
    out = pathlib.Path(args.get("--output", "/opt/ml/processing/output/train"))
    message = pathlib.Path(args.get("--message", "/opt/ml/output/message"))
    names = sorted(p.name for p in inp.iterdir())
    (out / f"{cfg['current_host']}.json").write_text(json.dumps({
        "files": names, "hosts": cfg["hosts"], "job": job["ProcessingJobName"],
        "args": sys.argv[1:], "host": socket.gethostname(), "env": os.environ.get("GREETING"),
    }))
    if os.environ.get("FAIL_WITH_MESSAGE"):
        message.write_text("bad rows in " + names[0])
        sys.exit(3)
    if os.environ.get("FAIL_WITH_STDERR"):
        print("something exploded on", cfg["current_host"], file=sys.stderr)
        sys.exit(1)
    """
)


MAPPED_ARGS = [
    "--config", "/opt/ml/config", "--input", "/opt/ml/processing/input/raw",
    "--output", "/opt/ml/processing/output/train", "--message", "/opt/ml/output/message",
]  # fmt: skip


def request(
    store, *, count=1, distribution="FullyReplicated", env=None, runtime=None, script=SCRIPT, args=None
):
    store.put_bytes("s3://b/code/pre.py", script.encode())
    req = {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.xlarge"}},
        "AppSpecification": {
            "ImageUri": "img",
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/pre.py"],
            "ContainerArguments": MAPPED_ARGS if args is None else args,
        },
        "Environment": {"GREETING": "hi", **(env or {})},
        "ProcessingInputs": [
            {
                "InputName": "raw",
                "S3Input": {
                    "S3Uri": "s3://b/raw",
                    "LocalPath": "/opt/ml/processing/input/raw",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                    "S3DataDistributionType": distribution,
                },
            },
            {
                "InputName": "code",
                "S3Input": {
                    "S3Uri": "s3://b/code/pre.py",
                    "LocalPath": "/opt/ml/processing/input/code",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            },
        ],
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "train",
                    "S3Output": {
                        "S3Uri": "s3://b/out/train",
                        "LocalPath": "/opt/ml/processing/output/train",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }
    if runtime:
        req["StoppingCondition"] = {"MaxRuntimeInSeconds": runtime}
    return req


def seed(store, n=4):
    for i in range(n):
        store.put_bytes(f"s3://b/raw/part-{i}.csv", f"row{i}\n".encode())


def test_script_with_hard_coded_container_paths_runs_unchanged(store, tmp_path, bwrap_mode):
    seed(store)
    lines = []
    res = run_processing_job(
        request(store, args=[]), job_name="pre-1", store=store, job_dir=tmp_path / "job",
        on_log=lambda h, line: lines.append((h, line)),
    )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    out = json.loads(store.path("s3://b/out/train/algo-1.json").read_text())
    files = [f"part-{i}.csv" for i in range(4)]
    assert out == {
        "files": files,
        "hosts": ["algo-1"],
        "job": "pre-1",
        "args": [],
        "host": "algo-1",
        "env": "hi",
    }
    assert res.properties["ProcessingJobStatus"] == "Completed"
    assert res.properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == "s3://b/out/train"
    assert [p.name for p in res.log_paths] == ["algo-1.log"] and res.job_dir == tmp_path / "job"


def test_container_paths_in_arguments_work_in_both_modes(store, tmp_path, mode):
    seed(store)
    res = run_processing_job(request(store), job_name="pre-1", store=store, job_dir=tmp_path / "job")
    assert res.status == "Completed", res.failure_reason
    out = json.loads(store.path("s3://b/out/train/algo-1.json").read_text())
    assert out["files"] == [f"part-{i}.csv" for i in range(4)] and out["job"] == "pre-1"
    if mode == "bwrap":
        assert out["args"] == MAPPED_ARGS
    else:  # mapped paths: the arguments now name this job's sandbox dirs
        assert out["args"][3] == str(tmp_path / "job" / "algo-1" / "ml" / "processing" / "input" / "raw")
    assert res.properties["ProcessingJobStatus"] == "Completed"
    assert res.properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == "s3://b/out/train"
    assert [p.name for p in res.log_paths] == ["algo-1.log"] and res.job_dir == tmp_path / "job"


def test_sharded_by_s3_key_splits_objects_over_instances(store, tmp_path, mode):
    seed(store, 5)
    res = run_processing_job(
        request(store, count=2, distribution="ShardedByS3Key"),
        job_name="pre-2",
        store=store,
        job_dir=tmp_path / "j",
    )
    assert res.status == "Completed", res.failure_reason
    one = json.loads(store.path("s3://b/out/train/algo-1.json").read_text())
    two = json.loads(store.path("s3://b/out/train/algo-2.json").read_text())
    assert one["files"] == ["part-0.csv", "part-2.csv", "part-4.csv"]
    assert two["files"] == ["part-1.csv", "part-3.csv"]
    assert one["hosts"] == two["hosts"] == ["algo-1", "algo-2"]
    assert len(res.log_paths) == 2


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"FAIL_WITH_MESSAGE": "1"}, "bad rows in part-0.csv"),
        ({"FAIL_WITH_STDERR": "1"}, "something exploded on algo-1"),
    ],
)
def test_failure_uploads_nothing_and_gives_the_reason(store, tmp_path, mode, env, reason):
    seed(store, 1)
    res = run_processing_job(request(store, env=env), job_name="pre-3", store=store, job_dir=tmp_path / "j")
    assert res.status == "Failed"
    assert reason in res.failure_reason
    assert store.list("s3://b/out/") == []
    # The job's own output stays in job_dir for a post-mortem.
    assert (tmp_path / "j" / "algo-1" / "ml" / "processing" / "output" / "train" / "algo-1.json").exists()
    if "FAIL_WITH_STDERR" in env:
        assert "[algo-1] something exploded on algo-1" in (tmp_path / "j" / "algo-1.log").read_text()


def test_max_runtime_stops_a_sleeper(store, tmp_path, mode):
    seed(store, 1)
    sleeper = "import time, signal, sys\nprint('sleeping', flush=True)\ntime.sleep(60)\n"
    t0 = time.monotonic()
    res = run_processing_job(
        request(store, runtime=1, script=sleeper), job_name="pre-4", store=store, job_dir=tmp_path / "j"
    )
    assert time.monotonic() - t0 < 15
    assert res.status == "Failed" and "MaxRuntimeExceeded" in res.failure_reason
    assert store.list("s3://b/out/") == []


def processes_with(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_cancel_event_stops_the_whole_process_tree(store, tmp_path, mode):
    seed(store, 1)
    marker = f"sleeper-{uuid.uuid4().hex}"
    sleeper = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60) # {marker}'])\n"
        "time.sleep(0.3)\nprint('up', flush=True)\ntime.sleep(60)\n"
    )
    cancel = threading.Event()
    seen = []

    def on_log(host, line):
        if line == "up":
            seen.append(processes_with(marker))
            cancel.set()

    t0 = time.monotonic()
    res = run_processing_job(
        request(store, script=sleeper), job_name="pre-5", store=store, job_dir=tmp_path / "j",
        on_log=on_log, cancel=cancel,
    )  # fmt: skip
    assert time.monotonic() - t0 < 15
    assert res.status == "Stopped"
    assert len(seen[0]) == 1  # the grandchild was running ...
    assert processes_with(marker) == []  # ... and is gone with the job
    assert store.list("s3://b/out/") == []


def test_local_path_outside_opt_ml_is_mounted_there(store, tmp_path, bwrap_mode):
    seed(store, 2)
    req = request(
        store,
        script="import os\nopen('/data/out/list.txt','w').write(','.join(sorted(os.listdir('/data/in'))))\n",
    )
    req["ProcessingInputs"][0]["S3Input"]["LocalPath"] = "/data/in"
    req["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["LocalPath"] = "/data/out"
    res = run_processing_job(req, job_name="pre-6", store=store, job_dir=tmp_path / "j")
    assert res.status == "Completed", res.failure_reason
    assert store.path("s3://b/out/train/list.txt").read_text() == "part-0.csv,part-1.csv"


def test_missing_input_objects_fail_the_job(store, tmp_path, mode):
    res = run_processing_job(request(store), job_name="pre-7", store=store, job_dir=tmp_path / "j")
    assert res.status == "Failed" and "no S3 objects found under s3://b/raw" in res.failure_reason


@pytest.mark.parametrize(
    "patch, fragment",
    [
        (lambda r: r["AppSpecification"].pop("ContainerEntrypoint"), "ContainerEntrypoint is missing"),
        (lambda r: r["ProcessingInputs"][0]["S3Input"].update(S3InputMode="Pipe"), "S3InputMode = 'Pipe'"),
        (lambda r: r["ProcessingInputs"][0]["S3Input"].update(LocalPath="rel/dir"), "must be an absolute"),
        (lambda r: r["ProcessingInputs"][0]["S3Input"].update(S3DataDistributionType="Random"), "Random"),
        (lambda r: r["ProcessingResources"]["ClusterConfig"].update(InstanceCount=0), "must be >= 1"),
        (lambda r: r["Environment"].update(N=3), "Environment.N = 3"),
        (lambda r: r["ProcessingInputs"][0].pop("S3Input"), "only S3Input"),
    ],
)
def test_bad_requests_are_refused_before_running(store, tmp_path, patch, fragment):
    seed(store, 1)
    req = request(store)
    patch(req)
    with pytest.raises(JobRequestError) as err:
        run_processing_job(req, job_name="bad", store=store, job_dir=tmp_path / "j")
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert store.list("s3://b/out/") == []


def test_python3_is_this_interpreter(store, tmp_path, mode):
    seed(store, 1)
    script = "import sys, pathlib\npathlib.Path(sys.argv[6], 'exe').write_text(sys.prefix)\n"
    res = run_processing_job(
        request(store, script=script), job_name="pre-8", store=store, job_dir=tmp_path / "j"
    )
    assert res.status == "Completed", res.failure_reason
    assert store.path("s3://b/out/train/exe").read_text() == sys.prefix
