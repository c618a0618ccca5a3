"""Training jobs on real processes: the container contract, multi-host rendezvous, channels, artifacts."""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
import threading
import time

import pytest

from mlops.local.runtime import JobRequestError, run_training_job
from tests.sdk_offline import store_session

# Two hosts meet over a fixed port at algo-1, as torchrun does; each checks the host contract first.
RENDEZVOUS = textwrap.dedent(
    """
    import json, os, pathlib, socket, sys, time
    host = os.environ["SM_CURRENT_HOST"]
    assert socket.gethostname() == host, (socket.gethostname(), host)
    assert socket.gethostbyname("algo-1") == "127.0.0.1"
    rc = json.load(open("/opt/ml/input/config/resourceconfig.json"))
    assert rc["current_host"] == host and rc["hosts"] == json.loads(os.environ["SM_HOSTS"])
    if host == "algo-1":
        srv = socket.create_server(("0.0.0.0", 7777))
        conn, _ = srv.accept()
        peer = conn.recv(64).decode()
        conn.sendall(b"ack")
        pathlib.Path(os.environ["SM_MODEL_DIR"], "peer.txt").write_text(peer)
    else:
        for _ in range(200):
            try:
                c = socket.create_connection(("algo-1", 7777))
                break
            except OSError:
                time.sleep(0.05)
        c.sendall(host.encode())
        assert c.recv(3) == b"ack"
    print(f"{host} loss=0.25 acc=0.9")
    """
)


def request(store, script: str, *, count=1, channels=None, hps=None, metrics=None, extra=None):
    store.put_bytes("s3://b/code/train.py", script.encode())
    req = {
        "AlgorithmSpecification": {
            "TrainingImage": "img",
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3"],
            "ContainerArguments": ["/opt/ml/input/data/code/train.py"],
            "MetricDefinitions": metrics or [],
        },
        "HyperParameters": hps or {"epochs": "3", "lr": "0.1", "name": '"net"'},
        "InputDataConfig": [
            {
                "ChannelName": "code",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/code"}},
                "InputMode": "File",
            },
            *(channels or []),
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        "RoleArn": "arn:aws:iam::123456789012:role/x",
        **(extra or {}),
    }
    return req


def model_files(store, job_name: str) -> dict[str, bytes]:
    data = store.path(f"s3://b/models/{job_name}/output/model.tar.gz").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_two_hosts_rendezvous_on_a_fixed_port(store, tmp_path, bwrap_mode):
    metrics = [{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}, {"Name": "acc", "Regex": r"acc=([0-9.]+)"}]
    lines = []
    res = run_training_job(
        request(store, RENDEZVOUS, count=2, metrics=metrics), job_name="t-1", store=store,
        job_dir=tmp_path / "j", on_log=lambda h, line: lines.append((h, line)),
    )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    assert model_files(store, "t-1") == {"peer.txt": b"algo-2"}
    assert res.properties["ModelArtifacts"]["S3ModelArtifacts"] == "s3://b/models/t-1/output/model.tar.gz"
    assert res.metrics == {"train:loss": 0.25, "acc": 0.9}
    final = {m["MetricName"]: m["Value"] for m in res.properties["FinalMetricDataList"]}
    assert final == res.metrics and res.properties["TrainingJobStatus"] == "Completed"
    assert ("algo-2", "algo-2 loss=0.25 acc=0.9") in lines
    assert [p.name for p in res.log_paths] == ["algo-1.log", "algo-2.log"]
    assert "[algo-2] algo-2 loss=0.25" in res.log_paths[1].read_text()


def test_concurrent_jobs_use_the_same_port_without_collision(store, tmp_path, bwrap_mode):
    results = {}

    def run(name):
        results[name] = run_training_job(
            request(store, RENDEZVOUS, count=2), job_name=name, store=store, job_dir=tmp_path / name
        )

    threads = [threading.Thread(target=run, args=(n,)) for n in ("c-1", "c-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert {n: r.status for n, r in results.items()} == {"c-1": "Completed", "c-2": "Completed"}, [
        r.failure_reason for r in results.values()
    ]


CONTRACT = textwrap.dedent(
    """
    import json, os, pathlib
    out = pathlib.Path(os.environ["SM_MODEL_DIR"])
    cfg = pathlib.Path(os.environ["SM_INPUT_CONFIG_DIR"])
    report = {name: json.loads((cfg / f"{name}.json").read_text())
              for name in ("hyperparameters", "resourceconfig", "inputdataconfig")}
    report["env"] = {k: v for k, v in os.environ.items() if k.startswith("SM_") or k == "GREETING"}
    report["files"] = sorted(os.listdir(os.environ["SM_CHANNEL_TRAIN"]))
    ckpt = pathlib.Path(os.environ["SM_CHECKPOINT_DIR"])
    report["ckpt"] = sorted(os.listdir(ckpt))
    (ckpt / "step-2.pt").write_text("new")
    pathlib.Path(os.environ["SM_OUTPUT_DATA_DIR"], "eval.json").write_text("{}")
    (out / "report.json").write_text(json.dumps(report))
    """
)


def train_channel(mode="File", uri="s3://b/data/train/"):
    return {
        "ChannelName": "train",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
        "InputMode": mode,
        "ContentType": "text/csv",
    }


def test_container_contract_files_env_checkpoints_and_outputs(store, tmp_path, mode):
    store.put_bytes("s3://b/data/train/a.csv", b"1\n")
    store.put_bytes("s3://b/ckpt/step-1.pt", b"old")
    extra = {"CheckpointConfig": {"S3Uri": "s3://b/ckpt"}, "Environment": {"GREETING": "hi"}}
    res = run_training_job(
        request(store, CONTRACT, channels=[train_channel()], extra=extra),
        job_name="t-2", store=store, job_dir=tmp_path / "j",
    )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    report = json.loads(model_files(store, "t-2")["report.json"])
    assert report["hyperparameters"] == {"epochs": "3", "lr": "0.1", "name": '"net"'}
    assert report["resourceconfig"] == {
        "current_host": "algo-1",
        "current_instance_type": "ml.m5.xlarge",
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-1"],
        "instance_groups": [
            {
                "instance_group_name": "homogeneousCluster",
                "instance_type": "ml.m5.xlarge",
                "hosts": ["algo-1"],
            }
        ],
        "network_interface_name": "eth0",
    }
    assert report["inputdataconfig"]["train"] == {
        "TrainingInputMode": "File",
        "S3DistributionType": "FullyReplicated",
        "RecordWrapperType": "None",
        "ContentType": "text/csv",
    }
    env = report["env"]
    assert json.loads(env["SM_HOSTS"]) == ["algo-1"] and env["SM_CURRENT_HOST"] == "algo-1"
    assert json.loads(env["SM_CHANNELS"]) == ["code", "train"]
    assert json.loads(env["SM_HPS"]) == {"epochs": 3, "lr": 0.1, "name": "net"}
    assert env["SM_HP_EPOCHS"] == "3" and env["GREETING"] == "hi"
    assert int(env["SM_NUM_CPUS"]) >= 1 and env["SM_NUM_GPUS"].isdigit()
    if mode == "bwrap":
        assert env["SM_MODEL_DIR"] == "/opt/ml/model"
        assert env["SM_CHANNEL_TRAIN"] == "/opt/ml/input/data/train"
    else:
        assert env["SM_MODEL_DIR"] == str(tmp_path / "j" / "algo-1" / "ml" / "model")
    assert report["files"] == ["a.csv"] and report["ckpt"] == ["step-1.pt"]
    assert store.list("s3://b/ckpt/") == ["s3://b/ckpt/step-1.pt", "s3://b/ckpt/step-2.pt"]
    assert store.exists("s3://b/models/t-2/output/output.tar.gz")
    assert (tmp_path / "j" / "algo-1" / "ml" / "output" / "data" / "eval.json").exists()


CHANNELS = textwrap.dedent(
    """
    import json, os, pathlib
    out = {}
    fast = pathlib.Path(os.environ["SM_CHANNEL_FAST"])
    out["fast"] = sorted(p.name for p in fast.iterdir())
    try:
        (fast / "new").write_text("x")
        out["fast_writable"] = True
    except OSError:
        out["fast_writable"] = False
    pipe = os.environ["SM_CHANNEL_PIPED"]
    out["epoch0"] = open(pipe + "_0", "rb").read().decode()
    out["epoch1"] = open(pipe + "_1", "rb").read().decode()
    out["fs"] = sorted(os.listdir(os.environ["SM_CHANNEL_EFS"]))
    pathlib.Path(os.environ["SM_MODEL_DIR"], "channels.json").write_text(json.dumps(out))
    """
)


def test_fastfile_pipe_and_file_system_channels(store, tmp_path, mode):
    store.put_bytes("s3://b/data/fast/x.csv", b"fast")
    store.put_bytes("s3://b/data/piped/p1", b"abc")
    store.put_bytes("s3://b/data/piped/p2", b"def")
    efs = tmp_path / "efs-root"
    (efs / "datasets" / "v1").mkdir(parents=True)
    (efs / "datasets" / "v1" / "big.bin").write_bytes(b"0")
    channels = [
        train_channel("FastFile", "s3://b/data/fast/") | {"ChannelName": "fast"},
        train_channel("Pipe", "s3://b/data/piped/") | {"ChannelName": "piped"},
        {
            "ChannelName": "efs",
            "DataSource": {
                "FileSystemDataSource": {
                    "FileSystemId": "fs-123",
                    "FileSystemType": "EFS",
                    "DirectoryPath": "/datasets/v1",
                    "FileSystemAccessMode": "ro",
                }
            },
        },
    ]
    res = run_training_job(
        request(store, CHANNELS, channels=channels), job_name="t-3", store=store, job_dir=tmp_path / "j",
        file_systems={"fs-123": str(efs)},
    )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    out = json.loads(model_files(store, "t-3")["channels.json"])
    assert out["fast"] == ["x.csv"]
    assert out["epoch0"] == "abcdef" and out["epoch1"] == "abcdef"
    assert out["fs"] == ["big.bin"]
    # FastFile copies nothing into the sandbox; in bwrap mode the store is also read-only to the job.
    assert not (tmp_path / "j" / "algo-1" / "ml" / "input" / "data" / "fast" / "x.csv").exists()
    if mode == "bwrap":
        assert out["fast_writable"] is False
        assert store.list("s3://b/data/fast/") == ["s3://b/data/fast/x.csv"]


FAILING = textwrap.dedent(
    """
    import os, pathlib, sys
    pathlib.Path(os.environ["SM_OUTPUT_FAILURE"]).write_text("loss diverged at epoch 2")
    sys.exit(1)
    """
)


def test_failure_file_is_the_reason_and_nothing_is_uploaded(store, tmp_path, mode):
    res = run_training_job(request(store, FAILING), job_name="t-4", store=store, job_dir=tmp_path / "j")
    assert res.status == "Failed" and res.failure_reason == "loss diverged at epoch 2"
    assert res.properties["FailureReason"] == "loss diverged at epoch 2"
    assert store.list("s3://b/models/") == []
    assert (tmp_path / "j" / "algo-1" / "ml" / "output" / "failure").exists()


def test_stderr_tail_is_the_reason_without_a_failure_file(store, tmp_path, mode):
    script = "import sys\nprint('epoch 1 ok')\nraise SystemExit('CUDA out of memory (pretend)')\n"
    res = run_training_job(request(store, script), job_name="t-5", store=store, job_dir=tmp_path / "j")
    assert res.status == "Failed"
    assert "algo-1 exited with code 1" in res.failure_reason and "CUDA out of memory" in res.failure_reason


@pytest.mark.parametrize(
    "patch, fragment",
    [
        (lambda r: r["AlgorithmSpecification"].pop("ContainerEntrypoint"), "ContainerEntrypoint is missing"),
        (lambda r: r["InputDataConfig"][0].update(InputMode="Stream"), "InputMode 'Stream'"),
        (lambda r: r["InputDataConfig"].append(dict(r["InputDataConfig"][0])), "repeated"),
        (
            lambda r: r["InputDataConfig"][0].update(
                DataSource={"FileSystemDataSource": {"FileSystemId": "fs-9", "DirectoryPath": "/x"}}
            ),
            "file system fs-9 is not mapped",
        ),
        (lambda r: r["ResourceConfig"].update(InstanceCount=0), "must be >= 1"),
        (lambda r: r["OutputDataConfig"].update(S3OutputPath="/tmp/x"), "not an S3 URI"),
        (
            lambda r: r["AlgorithmSpecification"].update(MetricDefinitions=[{"Name": "m", "Regex": "("}]),
            "MetricDefinitions[0]",
        ),
        (lambda r: r.pop("OutputDataConfig"), "missing field OutputDataConfig.S3OutputPath"),
    ],
)
def test_bad_requests_are_refused_before_running(store, tmp_path, patch, fragment):
    req = request(store, "print(1)")
    patch(req)
    with pytest.raises(JobRequestError) as err:
        run_training_job(req, job_name="bad", store=store, job_dir=tmp_path / "j")
    assert fragment in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "j").exists()


def test_empty_channel_fails_the_job_with_a_client_error(store, tmp_path, mode):
    res = run_training_job(
        request(store, "print(1)", channels=[train_channel(uri="s3://b/none/")]), job_name="t-6", store=store,
        job_dir=tmp_path / "j",
    )  # fmt: skip
    assert res.status == "Failed" and "no S3 objects found under s3://b/none/" in res.failure_reason


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, socket, sys
    import torch, torch.distributed as dist
    assert socket.gethostname() == os.environ["SM_CURRENT_HOST"]
    dist.init_process_group("gloo")
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    hosts = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, socket.gethostname())
    print(f"rank={dist.get_rank()} sum={t.item()} args={sys.argv[1:]}", flush=True)
    if dist.get_rank() == 0:
        with open(os.path.join(os.environ["SM_MODEL_DIR"], "model.json"), "w") as f:
            json.dump({"hosts": hosts, "sum": t.item(), "args": sys.argv[1:]}, f)
    dist.destroy_process_group()
    """
)


def sdk_training_request(store, code_dir):
    """A TrainingStep's Arguments as the SageMaker SDK builds them (ModelTrainer + Torchrun, 2 instances)."""
    import os

    os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
    os.environ.setdefault("AWS_DEFAULT_REGION", "eu-west-1")
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import TrainingStep
    from sagemaker.train import ModelTrainer
    from sagemaker.train.configs import Compute, OutputDataConfig, SourceCode, StoppingCondition
    from sagemaker.train.distributed import Torchrun

    session = store_session(store)
    trainer = ModelTrainer(
        training_image="img",
        role="arn:aws:iam::123456789012:role/x",
        sagemaker_session=session,
        base_job_name="train",
        source_code=SourceCode(source_dir=str(code_dir), entry_script="train.py"),
        compute=Compute(instance_type="ml.m5.xlarge", instance_count=2),
        distributed=Torchrun(process_count_per_node=1),
        stopping_condition=StoppingCondition(max_runtime_in_seconds=300),
        output_data_config=OutputDataConfig(s3_output_path="s3://b/models"),
        hyperparameters={"epochs": 2},
    )
    step = TrainingStep(name="Train", step_args=trainer.train())
    definition = json.loads(Pipeline(name="p", steps=[step], sagemaker_session=session).definition())
    return definition["Steps"][0]["Arguments"]


@pytest.mark.slow
def test_sdk_torchrun_driver_runs_unchanged_on_two_hosts(store, tmp_path, bwrap_mode):
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(DDP_SCRIPT)
    req = sdk_training_request(store, code)
    assert req["AlgorithmSpecification"]["ContainerEntrypoint"] == ["/bin/bash"]
    assert "sm_train.sh" in req["AlgorithmSpecification"]["ContainerArguments"][-1]
    lines = []
    res = run_training_job(
        req,
        job_name="sdk-1",
        store=store,
        job_dir=tmp_path / "j",
        on_log=lambda h, line: lines.append((h, line)),
    )
    assert res.status == "Completed", res.failure_reason
    model = json.loads(model_files(store, "sdk-1")["model.json"])
    assert model == {"hosts": ["algo-1", "algo-2"], "sum": 3.0, "args": ["--epochs", "2"]}
    assert ("algo-2", "rank=1 sum=3.0 args=['--epochs', '2']") in lines
    assert any(
        "--master_addr=algo-1 --master_port=7777 --node_rank=1" in line for h, line in lines if h == "algo-2"
    )


def test_cancel_stops_training_and_still_syncs_checkpoints(store, tmp_path, mode):
    script = textwrap.dedent(
        """
        import os, pathlib, time
        pathlib.Path(os.environ["SM_CHECKPOINT_DIR"], "epoch-1.pt").write_text("1")
        print("checkpoint written", flush=True)
        time.sleep(60)
        """
    )
    cancel = threading.Event()
    extra = {"CheckpointConfig": {"S3Uri": "s3://b/ckpt/run"}}
    res = run_training_job(
        request(store, script, extra=extra), job_name="t-7", store=store, job_dir=tmp_path / "j",
        on_log=lambda h, line: cancel.set() if line == "checkpoint written" else None, cancel=cancel,
    )  # fmt: skip
    assert res.status == "Stopped" and res.properties["TrainingJobStatus"] == "Stopped"
    assert store.list("s3://b/ckpt/run/") == ["s3://b/ckpt/run/epoch-1.pt"]
    assert store.list("s3://b/models/") == [] and "ModelArtifacts" not in res.properties


def test_a_rerun_in_the_same_job_dir_starts_clean(store, tmp_path, mode):
    script = textwrap.dedent(
        """
        import os, pathlib
        model = pathlib.Path(os.environ["SM_MODEL_DIR"])
        (model / f"{len(os.listdir(model))}.txt").write_text("x")
        """
    )
    for _ in range(2):
        res = run_training_job(request(store, script), job_name="t-8", store=store, job_dir=tmp_path / "j")
        assert res.status == "Completed", res.failure_reason
    assert model_files(store, "t-8") == {"0.txt": b"x"}


def test_one_failed_host_fails_the_job_without_waiting_for_its_peer(store, tmp_path, mode):
    script = textwrap.dedent(
        """
        import os, sys, time
        if os.environ["SM_CURRENT_HOST"] == "algo-2":
            sys.exit("algo-2 lost its data")
        time.sleep(60)  # algo-1 waits for a peer that will never come
        """
    )
    t0 = time.monotonic()
    res = run_training_job(
        request(store, script, count=2), job_name="t-9", store=store, job_dir=tmp_path / "j"
    )
    assert time.monotonic() - t0 < 20
    assert res.status == "Failed" and "algo-2 exited with code 1: algo-2 lost its data" in res.failure_reason


@pytest.mark.slow
def test_a_failing_rank_under_the_sdk_torchrun_driver_names_its_own_error(store, tmp_path, bwrap_mode):
    """Not ``CalledProcessError: Command '['torchrun', ...]'``: the reason is rank 1's own first error line."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(
        textwrap.dedent(
            """
            import torch.distributed as dist
            dist.init_process_group("gloo")
            if dist.get_rank() == 1:
                raise ValueError("shard 7 of the training data has 0 rows")
            dist.barrier()
            """
        )
    )
    res = run_training_job(
        sdk_training_request(store, code), job_name="sdk-fail", store=store, job_dir=tmp_path / "j"
    )
    assert res.status == "Failed"
    assert res.failure_reason.startswith("ValueError: shard 7 of the training data has 0 rows"), (
        res.failure_reason
    )
    assert "CalledProcessError" not in res.failure_reason and "torchrun" not in res.failure_reason
