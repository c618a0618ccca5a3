"""A job's own filesystem: writable where a container's is, on disk, discarded with the job, and counted
against its ``VolumeSizeInGB``."""

from __future__ import annotations

import json
import os
import textwrap
import uuid

import pytest

from mlops.local.runtime import run_processing_job, run_training_job
from mlops.local.runtime.sandbox import Instance, VolumeWatch, tree_bytes

# What scripts written for a container do without asking: write beside themselves in the working dir, in
# /tmp and $HOME, and make a dir at the root (the SDK's remote functions use /sagemaker_remote_function_workspace).
WRITER = textwrap.dedent(
    """
    import json, os, pathlib, sys
    marker = sys.argv[1]
    pathlib.Path("model.joblib").write_bytes(b"m" * 1000)
    pathlib.Path("/tmp/scratch.bin").write_bytes(b"t" * 1000)
    pathlib.Path(os.path.expanduser("~/.cache/x")).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(os.path.expanduser("~/.cache/x")).write_text("h")
    # (without namespaces an absolute path is the host's: there the workspace is made relative)
    ws = pathlib.Path("/sagemaker_remote_function_workspace" if sys.argv[3] == "bwrap" else "workspace")
    ws.mkdir(exist_ok=True)
    (ws / marker).write_text("w")
    out = pathlib.Path(sys.argv[2])
    (out / "seen.json").write_text(json.dumps({
        "cwd": os.getcwd(), "model": pathlib.Path("model.joblib").stat().st_size,
        "tmp": os.path.exists("/tmp/scratch.bin"), "ws": sorted(os.listdir(ws)),
        "home": os.path.expanduser("~"),
    }))
    """
)


def processing_request(store, script, args, volume_gb=None):
    store.put_bytes("s3://b/code/job.py", script.encode())
    cluster = {"InstanceCount": 1, "InstanceType": "ml.m5.large"}
    if volume_gb is not None:
        cluster["VolumeSizeInGB"] = volume_gb
    return {
        "ProcessingResources": {"ClusterConfig": cluster},
        "AppSpecification": {
            "ImageUri": "img",
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/job.py"],
            "ContainerArguments": args,
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
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "out",
                    "S3Output": {
                        "S3Uri": "s3://b/out",
                        "LocalPath": "/opt/ml/processing/output",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }


def test_a_script_writes_where_a_container_lets_it_and_nothing_reaches_the_host(store, tmp_path, mode):
    marker = f"mark-{uuid.uuid4().hex}"
    req = processing_request(store, WRITER, [marker, "/opt/ml/processing/output", mode])
    res = run_processing_job(req, job_name="w-1", store=store, job_dir=tmp_path / "job")
    assert res.status == "Completed", res.failure_reason
    seen = json.loads(store.path("s3://b/out/seen.json").read_text())
    assert seen["model"] == 1000 and seen["tmp"] is True and seen["ws"] == [marker]
    if mode == "bwrap":
        assert seen["cwd"] == "/"
    else:  # without namespaces the working dir "/" is the job's layer, never the host's root
        assert seen["cwd"] == str(tmp_path / "job" / "algo-1" / "layer")
    # The host's root, /tmp and $HOME got none of it, and the layer went with the job.
    assert not os.path.exists("/model.joblib") and not os.path.exists(
        f"/sagemaker_remote_function_workspace/{marker}"
    )
    assert not (tmp_path / "job" / "algo-1" / "layer").exists()
    hits = [p for p in (tmp_path / "job").rglob(marker)]
    assert hits == []
    if mode == "none":
        os.remove("/tmp/scratch.bin")  # the one path a job without namespaces shares with the host


def test_bwrap_layer_is_on_disk_not_in_memory(store, tmp_path, bwrap_mode):
    script = textwrap.dedent(
        """
        import json, os, sys, pathlib
        st = os.statvfs("/")
        pathlib.Path(sys.argv[1], "fs.json").write_text(json.dumps({
            "root": open("/proc/self/mountinfo").read().split("\\n")[0],
            "tmp_same_fs": os.stat("/tmp").st_dev == os.stat("/").st_dev,
        }))
        """
    )
    req = processing_request(store, script, ["/opt/ml/processing/output"])
    res = run_processing_job(req, job_name="fs-1", store=store, job_dir=tmp_path / "job")
    assert res.status == "Completed", res.failure_reason
    fs = json.loads(store.path("s3://b/out/fs.json").read_text())
    # "/" is the layer (a bind of a host dir: not bwrap's tmpfs), and /tmp lives on it.
    fields, fstype = fs["root"].split()[:6], fs["root"].split(" - ")[1].split()[0]
    assert fields[4] == "/" and fields[3].endswith("/job/algo-1/layer") and fstype != "tmpfs", fs["root"]
    assert fs["tmp_same_fs"] is True


FILLER = textwrap.dedent(
    """
    import os, sys, time
    fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o644)
    os.posix_fallocate(fd, 0, int(sys.argv[2]))  # real blocks, without writing them
    os.close(fd)
    if sys.argv[3] == "stay":
        time.sleep(60)
    """
)


@pytest.mark.parametrize("where", ["/tmp/big.bin", "/opt/ml/processing/output/big.bin", "big.bin"])
def test_a_job_past_its_volume_is_stopped_with_the_field_named(store, tmp_path, mode, where):
    size = str(int(1.2 * 2**30))
    if mode == "none" and where.startswith("/tmp"):
        pytest.skip("without namespaces /tmp is the host's: only the layer and the job's dirs count")
    req = processing_request(store, FILLER, [where, size, "stay"], volume_gb=1)
    res = run_processing_job(req, job_name="full-1", store=store, job_dir=tmp_path / "job")
    assert res.status == "Failed"
    assert "ProcessingResources.ClusterConfig.VolumeSizeInGB" in res.failure_reason
    assert "algo-1 wrote 1.2" in res.failure_reason and "over its 1.00 GB volume" in res.failure_reason


def test_a_job_that_fills_its_volume_and_exits_at_once_fails_too(store, tmp_path, bwrap_mode):
    req = processing_request(store, FILLER, ["/x.bin", str(int(1.1 * 2**30)), "exit"], volume_gb=1)
    res = run_processing_job(req, job_name="full-2", store=store, job_dir=tmp_path / "job")
    assert res.status == "Failed" and "VolumeSizeInGB" in res.failure_reason, res.failure_reason


def test_a_job_within_its_volume_completes(store, tmp_path, bwrap_mode):
    req = processing_request(store, FILLER, ["/x.bin", str(200 * 2**20), "exit"], volume_gb=1)
    res = run_processing_job(req, job_name="fits-1", store=store, job_dir=tmp_path / "job")
    assert res.status == "Completed", res.failure_reason


def test_training_counts_its_resource_config_volume(store, tmp_path, bwrap_mode):
    store.put_bytes("s3://b/train/a.csv", b"1,2\n")
    req = {
        "AlgorithmSpecification": {
            "TrainingImage": "img",
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3", "-c", FILLER, "/opt/ml/model/big.bin", str(int(1.3 * 2**30)), "stay"],
        },
        "InputDataConfig": [
            {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/train", "S3DataType": "S3Prefix"}}}
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
        "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        "RoleArn": "arn:aws:iam::123456789012:role/x",
    }  # fmt: skip
    res = run_training_job(req, job_name="t-full", store=store, job_dir=tmp_path / "job")
    assert res.status == "Failed" and "ResourceConfig.VolumeSizeInGB" in res.failure_reason, (
        res.failure_reason
    )
    assert not store.exists("s3://b/out/t-full/output/model.tar.gz")


def test_volume_size_must_be_positive(store, tmp_path, bwrap_mode):
    from mlops.local.runtime import JobRequestError

    req = processing_request(store, FILLER, ["/x", "1", "exit"], volume_gb=0)
    with pytest.raises(JobRequestError, match=r"VolumeSizeInGB = 0 must be >= 1"):
        run_processing_job(req, job_name="v0", store=store, job_dir=tmp_path / "job")


def test_tree_bytes_counts_blocks_once_and_never_follows_links(tmp_path):
    (tmp_path / "d").mkdir()
    with open(tmp_path / "d" / "f", "wb") as f:
        os.posix_fallocate(f.fileno(), 0, 1 << 20)
    os.link(tmp_path / "d" / "f", tmp_path / "hard")
    os.symlink("/usr", tmp_path / "link")
    used = tree_bytes(tmp_path)
    assert 1 << 20 <= used < (1 << 20) + 64 * 1024


def test_volume_watch_spaces_its_counts(tmp_path):
    inst = Instance("algo-1", ["true"], {}, volume=(tmp_path,), volume_bytes=10)
    (tmp_path / "f").write_bytes(b"x" * 8192)
    watch = VolumeWatch([inst], min_interval=3600)
    assert watch.over() is None  # not due yet
    assert watch.over(final=True) == "algo-1 wrote 8.0 KB, over its 0.0 KB volume"
