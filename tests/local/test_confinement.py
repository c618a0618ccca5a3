"""Paths from a definition, and what a job leaves in its sandbox, never reach outside the store.

Each test is one escape that once worked (an S3 key that became a host path, a symlink the executor
followed, a FIFO swapped for a link), tried with real jobs in the real runtime, in both sandbox modes where
a job runs: the host file stays untouched and unread, and the step fails or skips with the reason named.
"""

from __future__ import annotations

import io
import json
import tarfile
import textwrap

import pytest

from mlops.definition import preflight
from mlops.errors import DefinitionError
from mlops.local.runtime import JobRequestError, run_processing_job, run_training_job
from mlops.local.s3store import S3StoreError
from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home

ROLE = "arn:aws:iam::123456789012:role/x"
SECRET = b"TOPSECRET-host-file-do-not-leak\n"


@pytest.fixture
def victim(tmp_path):
    """A user's files outside the store and outside every job dir."""
    home = tmp_path / "home" / "user"
    home.mkdir(parents=True)
    (home / "secret.txt").write_bytes(SECRET)
    (home / "failure").write_bytes(SECRET)
    return home


def untouched(victim) -> bool:
    return sorted(p.name for p in victim.iterdir()) == ["failure", "secret.txt"] and all(
        (victim / n).read_bytes() == SECRET for n in ("failure", "secret.txt")
    )


def processing(code: str, *, out_uri="s3://b/out", inputs=(), count=1) -> dict:
    """``python3 -c code /opt/ml/processing/output/train /opt/ml/output`` (paths rewritten when mapped)."""
    return {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": count, "InstanceType": "ml.m5.large"}},
        "AppSpecification": {
            "ImageUri": "img",
            "ContainerEntrypoint": ["python3", "-c", textwrap.dedent(code)],
            "ContainerArguments": ["/opt/ml/processing/output/train", "/opt/ml/output"],
        },
        "ProcessingInputs": list(inputs),
        "ProcessingOutputConfig": {
            "Outputs": [
                {
                    "OutputName": "train",
                    "S3Output": {
                        "S3Uri": out_uri,
                        "LocalPath": "/opt/ml/processing/output/train",
                        "S3UploadMode": "EndOfJob",
                    },
                }
            ]
        },
        "RoleArn": ROLE,
    }


def training(store, code: str, *, channels=(), extra=None) -> dict:
    store.put_bytes("s3://b/code/train.py", textwrap.dedent(code).encode())
    return {
        "AlgorithmSpecification": {
            "TrainingImage": "img",
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3"],
            "ContainerArguments": ["/opt/ml/input/data/code/train.py"],
        },
        "InputDataConfig": [
            {
                "ChannelName": "code",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/code"}},
                "InputMode": "File",
            },
            *channels,
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60},
        "RoleArn": ROLE,
        **(extra or {}),
    }


def log_text(res) -> str:
    return "".join(p.read_text() for p in res.log_paths if p.exists())


# ------------------------------------------------------------------------------ keys from a definition


@pytest.mark.parametrize("shape", ["//{abs}", "/x/../../../..{abs}", "/./{rel}", "/a//{rel}"])
def test_output_uri_with_empty_dot_or_dotdot_segments_is_refused(store, tmp_path, victim, mode, shape):
    """``s3://b//home/user/x`` once became the host path /home/user/x and the output overwrote it."""
    uri = "s3://b" + shape.format(abs=str(victim), rel="secret.txt")
    req = processing(
        "import pathlib, sys; pathlib.Path(sys.argv[1], 'secret.txt').write_text('owned')", out_uri=uri
    )
    with pytest.raises(JobRequestError) as err:
        run_processing_job(req, job_name="p", store=store, job_dir=tmp_path / "job", file_systems=None)
    message = str(err.value)
    assert uri in message and "\n" not in message and "ProcessingOutputConfig.Outputs[0]" in message
    assert untouched(victim)
    assert not (tmp_path / "job").exists()  # refused before a host dir was made


@pytest.mark.parametrize("uri", ["s3://b//etc/passwd", "s3://b/../etc", "s3://b/a/./b", "s3://b/a//b"])
def test_the_store_refuses_keys_that_could_leave_it(store, uri):
    for call in (store.path, store.exists, store.list, lambda u: store.put_bytes(u, b"x")):
        with pytest.raises(S3StoreError, match="local store refuses") as err:
            call(uri)
        assert uri in str(err.value)
    assert store.path("s3://b/prefix/") == store.root / "b" / "prefix"  # one trailing '/' is a prefix


def test_a_symlink_inside_the_store_cannot_lead_out_of_it(store, victim):
    (store.root / "b").mkdir(parents=True)
    (store.root / "b" / "link").symlink_to(victim)
    with pytest.raises(S3StoreError, match="outside the local store"):
        store.path("s3://b/link/secret.txt")


@pytest.mark.parametrize(
    "manifest",
    [
        [{"prefix": "s3://b/raw/"}, "{abs}/secret.txt"],
        [{"prefix": "s3://b/raw/"}, "../../../../../../../../..{abs}/secret.txt"],
        [{"prefix": "s3://b/raw/"}, "ok.csv", "sub/../../x"],
        [{"prefix": "/etc/"}, "passwd"],
        [{"prefix": "s3://b//etc/"}, "passwd"],
    ],
)
def test_manifest_entries_that_name_host_paths_are_refused(store, tmp_path, victim, mode, manifest):
    store.put_bytes("s3://b/raw/ok.csv", b"row\n")
    text = json.dumps(manifest).replace("{abs}", str(victim))
    store.put_bytes("s3://b/manifest.json", text.encode())
    inp = {
        "InputName": "raw",
        "S3Input": {
            "S3Uri": "s3://b/manifest.json",
            "LocalPath": "/opt/ml/processing/input/raw",
            "S3DataType": "ManifestFile",
            "S3InputMode": "File",
        },
    }
    with pytest.raises(JobRequestError) as err:
        run_processing_job(
            processing("print('ran')", inputs=[inp]), job_name="p", store=store, job_dir=tmp_path / "job"
        )
    assert "manifest s3://b/manifest.json" in str(err.value) and "\n" not in str(err.value)
    assert untouched(victim)


def test_file_system_directory_path_cannot_climb_out_of_its_root(store, tmp_path, victim):
    efs = tmp_path / "efs"
    efs.mkdir()
    channel = {
        "ChannelName": "efs",
        "DataSource": {
            "FileSystemDataSource": {
                "FileSystemId": "fs-1",
                "FileSystemType": "EFS",
                "DirectoryPath": "/../home/user",
                "FileSystemAccessMode": "rw",
            }
        },
    }
    req = training(store, "print('ran')", channels=[channel])
    with pytest.raises(JobRequestError, match="resolves outside"):
        run_training_job(
            req, job_name="t", store=store, job_dir=tmp_path / "j", file_systems={"fs-1": str(efs)}
        )
    assert untouched(victim)


@pytest.mark.parametrize("key", ["/{abs}/secret.txt", "../../{abs}/secret.txt"])
def test_model_metrics_uri_with_an_absolute_key_is_not_read_into_the_registry(tmp_path, victim, key):
    uri = "s3://bucket/" + key.format(abs=str(victim).lstrip("/"))
    if key.startswith("/"):
        uri = f"s3://bucket/{victim}/secret.txt"  # s3://bucket//tmp/.../secret.txt
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": "digits",
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": "s3://bucket/m.tar.gz"}]
            },
            "ModelMetrics": {
                "ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": uri}}
            },
        },
    }
    definition = {"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": [register]}
    record = run_definition(definition, home=tmp_path / "home-mlops")
    assert record.status == "Failed"
    reason = record.failure_reason
    assert "Register" in reason and uri in reason and "ModelQuality.Statistics" in reason
    assert "TOPSECRET" not in reason and "\n" not in reason
    assert Home.open(tmp_path / "home-mlops").registry.list() == []
    assert untouched(victim)


# ------------------------------------------------------------------------- what a job leaves behind


LINK_IN_OUTPUT = """
    import os, pathlib, sys
    out = pathlib.Path(sys.argv[1])
    (out / "ok.txt").write_text("fine")
    os.symlink(os.environ["VICTIM"], out / "leak.txt")
    os.symlink(os.path.dirname(os.environ["VICTIM"]), out / "leakdir")
    os.mkfifo(out / "fifo")
"""


def test_a_symlink_in_a_processing_output_is_skipped_not_followed(store, tmp_path, victim, mode):
    req = processing(LINK_IN_OUTPUT)
    req["Environment"] = {"VICTIM": str(victim / "secret.txt")}
    res = run_processing_job(req, job_name="p", store=store, job_dir=tmp_path / "job")
    assert res.status == "Completed", res.failure_reason
    assert store.list("s3://b/out/") == ["s3://b/out/ok.txt"]
    log = log_text(res)
    for name in ("leak.txt", "leakdir", "fifo"):
        assert f"/opt/ml/processing/output/train/{name} skipped" in log
    assert "TOPSECRET" not in log
    assert untouched(victim)


SWAP_OUTPUT_DIR = """
    import os, shutil, sys
    shutil.rmtree(sys.argv[1])
    os.symlink(os.environ["VICTIM_DIR"], sys.argv[1])
"""


def test_an_output_dir_swapped_for_a_symlink_fails_the_job_and_uploads_nothing(store, tmp_path, victim, mode):
    req = processing(SWAP_OUTPUT_DIR)
    req["Environment"] = {"VICTIM_DIR": str(victim)}
    res = run_processing_job(req, job_name="p", store=store, job_dir=tmp_path / "job")
    assert res.status == "Failed"
    assert "output train (/opt/ml/processing/output/train on algo-1) not uploaded" in res.failure_reason
    assert "symlink" in res.failure_reason
    assert store.list("s3://b/out/") == []
    assert untouched(victim)


LINK_IN_MODEL = """
    import os, pathlib
    model = pathlib.Path(os.environ["SM_MODEL_DIR"])
    (model / "weights.bin").write_bytes(b"w")
    os.symlink(os.environ["VICTIM"], model / "leak.txt")
    os.symlink(os.path.dirname(os.environ["VICTIM"]), model / "leakdir")
"""


def test_a_symlink_in_the_model_dir_is_kept_as_a_link_never_dereferenced(store, tmp_path, victim, mode):
    req = training(store, LINK_IN_MODEL, extra={"Environment": {"VICTIM": str(victim / "secret.txt")}})
    res = run_training_job(req, job_name="t", store=store, job_dir=tmp_path / "j")
    assert res.status == "Completed", res.failure_reason
    data = store.path("s3://b/models/t/output/model.tar.gz").read_bytes()
    assert SECRET not in data and b"TOPSECRET" not in __import__("gzip").decompress(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["weights.bin"].isfile()
    assert members["leak.txt"].issym() and members["leakdir"].issym()
    assert not any(name.startswith("leakdir/") for name in members)
    assert "/opt/ml/model/leak.txt: a symlink" in log_text(res)
    assert untouched(victim)


def test_a_model_dir_swapped_for_a_symlink_fails_the_job(store, tmp_path, victim, mode):
    code = """
        import os, shutil
        shutil.rmtree(os.environ["SM_MODEL_DIR"])
        os.symlink(os.environ["VICTIM_DIR"], os.environ["SM_MODEL_DIR"])
    """
    req = training(store, code, extra={"Environment": {"VICTIM_DIR": str(victim)}})
    res = run_training_job(req, job_name="t", store=store, job_dir=tmp_path / "j")
    assert res.status == "Failed" and "model or output data not uploaded" in res.failure_reason
    assert not store.exists("s3://b/models/t/output/model.tar.gz")
    assert untouched(victim)


LINK_IN_CHECKPOINTS = """
    import os, pathlib
    ckpt = pathlib.Path(os.environ["SM_CHECKPOINT_DIR"])
    (ckpt / "step-1.pt").write_bytes(b"ckpt")
    os.symlink(os.environ["VICTIM"], ckpt / "leak.pt")
"""


def test_a_symlink_in_the_checkpoint_dir_is_not_synced(store, tmp_path, victim, mode):
    extra = {
        "Environment": {"VICTIM": str(victim / "secret.txt")},
        "CheckpointConfig": {"S3Uri": "s3://b/ckpt"},
    }
    res = run_training_job(training(store, LINK_IN_CHECKPOINTS, extra=extra), job_name="t", store=store,
                           job_dir=tmp_path / "j")  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    assert store.list("s3://b/ckpt/") == ["s3://b/ckpt/step-1.pt"]
    assert "checkpoint /opt/ml/checkpoints/leak.pt skipped" in log_text(res)
    assert untouched(victim)


@pytest.mark.parametrize("how", ["file", "dir"])
def test_a_symlinked_failure_file_is_not_read(store, tmp_path, victim, mode, how):
    """/opt/ml/output/failure -> a host file (or /opt/ml/output -> a host dir): its content once became
    the failure reason."""
    code = """
        import os, shutil, sys
        failure = os.environ["SM_OUTPUT_FAILURE"]
        if os.environ["HOW"] == "file":
            os.symlink(os.environ["VICTIM"], failure)
        else:
            shutil.rmtree(os.path.dirname(failure))
            os.symlink(os.path.dirname(os.environ["VICTIM"]), os.path.dirname(failure))
        print("ValueError: the job's own error", file=sys.stderr)
        sys.exit(2)
    """
    env = {"VICTIM": str(victim / ("secret.txt" if how == "file" else "failure")), "HOW": how}
    res = run_training_job(training(store, code, extra={"Environment": env}), job_name="t", store=store,
                           job_dir=tmp_path / "j")  # fmt: skip
    assert res.status == "Failed"
    assert "TOPSECRET" not in res.failure_reason
    assert res.failure_reason.startswith("ValueError: the job's own error")
    assert "/opt/ml/output/failure ignored: a symlink or not a regular file" in res.failure_reason
    assert untouched(victim)


def test_a_pipe_fifo_swapped_for_a_symlink_is_never_written(store, tmp_path, victim, mode):
    store.put_bytes("s3://b/data/piped/p1", b"CHANNEL-DATA" * 1000)
    code = """
        import os, time
        fifo = os.environ["SM_CHANNEL_TRAIN"] + "_0"
        for _ in range(200):
            if os.path.exists(fifo):
                break
            time.sleep(0.01)
        os.remove(fifo)
        os.symlink(os.environ["VICTIM"], fifo)
        time.sleep(1.5)
    """
    channel = {
        "ChannelName": "train",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/data/piped/"}},
        "InputMode": "Pipe",
    }
    env = {"VICTIM": str(victim / "secret.txt")}
    res = run_training_job(training(store, code, channels=[channel], extra={"Environment": env}), job_name="t",
                           store=store, job_dir=tmp_path / "j")  # fmt: skip
    assert res.status == "Failed"
    assert "channel train: /opt/ml/input/data/train_0 was" in res.failure_reason
    assert untouched(victim)


# ------------------------------------------------------------------------------------- InstanceCount


def _definition(step_type: str, count: int) -> dict:
    if step_type == "Processing":
        step = {"Name": "Big", "Type": "Processing", "Arguments": processing("print(1)", count=count)}
    else:
        args = {
            "AlgorithmSpecification": {"TrainingImage": "img", "TrainingInputMode": "File"},
            "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": count, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 60},
            "RoleArn": ROLE,
        }
        step = {"Name": "Big", "Type": "Training", "Arguments": args}
    return {"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": [step]}


@pytest.mark.parametrize(
    "step_type, count, fragment",
    [
        ("Processing", 100000, "CreateProcessingJob allows at most 100"),
        ("Processing", 65, "at most 64 local hosts"),
        ("Training", 100000, "at most 64 local hosts"),
    ],
)
def test_instance_count_over_the_limits_is_refused_before_start(tmp_path, step_type, count, fragment):
    home = tmp_path / "home-mlops"
    with pytest.raises(DefinitionError) as err:
        run_definition(_definition(step_type, count), home=home)
    message = str(err.value)
    assert "step Big" in message and str(count) in message and fragment in message and "\n" not in message
    assert not list(tmp_path.rglob("algo-*"))  # not one host dir


def test_validate_keeps_sagemakers_limit_and_leaves_the_local_one_to_run():
    assert [p.field for p in preflight.problems(_definition("Processing", 101))] == [
        "Arguments.ProcessingResources.ClusterConfig.InstanceCount"
    ]
    assert preflight.problems(_definition("Training", 65)) == []


@pytest.mark.parametrize("group_counts", [[100000], [40, 40]])
def test_the_runtime_refuses_too_many_hosts_without_making_a_dir(store, tmp_path, group_counts):
    with pytest.raises(JobRequestError, match="hosts that run on this machine"):
        run_processing_job(
            processing("print(1)", count=100000), job_name="p", store=store, job_dir=tmp_path / "p"
        )
    groups = [
        {"InstanceGroupName": f"g{i}", "InstanceType": "ml.m5.large", "InstanceCount": n}
        for i, n in enumerate(group_counts)
    ]
    req = training(store, "print(1)")
    req["ResourceConfig"] = {"InstanceGroups": groups, "VolumeSizeInGB": 1}
    with pytest.raises(JobRequestError, match="hosts that run on this machine"):
        run_training_job(req, job_name="t", store=store, job_dir=tmp_path / "t")
    assert not (tmp_path / "p").exists() and not (tmp_path / "t").exists()
