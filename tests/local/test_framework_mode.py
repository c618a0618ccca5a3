"""Framework estimators (``sagemaker_program`` / ``sagemaker_submit_directory``) run the way their image does:
through the real ``sagemaker-training`` toolkit and, on PyTorch images, ``sagemaker-pytorch-training``."""

from __future__ import annotations

import json
import textwrap

import pytest

from mlops.local.runtime import run_training_job
from tests.local.test_training_job import model_files

PYTORCH = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.5-cpu-py311"
SKLEARN = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

DDP = textwrap.dedent(
    """
    import argparse, json, os, socket
    import torch, torch.distributed as dist
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int)
    p.add_argument("--model-dir", default=os.environ["SM_MODEL_DIR"])
    args = p.parse_args()
    dist.init_process_group("gloo")
    if os.environ.get("FAIL_RANK") == str(dist.get_rank()):
        raise ValueError(f"no rows in shard {dist.get_rank()}")
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    hosts = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, socket.gethostname())
    if dist.get_rank() == 0:
        with open(os.path.join(args.model_dir, "model.json"), "w") as f:
            json.dump({"hosts": hosts, "sum": t.item(), "epochs": args.epochs}, f)
    dist.barrier()
    dist.destroy_process_group()
    """
)


def framework_request(
    store, image: str, script: str, *, count: int, hps: dict, env: dict | None = None
) -> dict:
    """A Training request as the SDK v2 framework estimators build it: JSON-encoded ``sagemaker_*`` values,
    no ContainerEntrypoint (the image's own runs), the code delivered where ``sagemaker_submit_directory``
    says."""
    store.put_bytes("s3://b/code/train.py", script.encode())
    return {
        "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
        "HyperParameters": {
            "sagemaker_program": '"train.py"',
            "sagemaker_submit_directory": '"/opt/ml/input/data/code"',
            "sagemaker_container_log_level": "20",
            "sagemaker_region": '"us-east-1"',
            **hps,
        },
        "InputDataConfig": [
            {
                "ChannelName": "code",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/code"}},
                "InputMode": "File",
            }
        ],
        "OutputDataConfig": {"S3OutputPath": "s3://b/models"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": count, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 240},
        "RoleArn": "arn:aws:iam::111122223333:role/x",
        "Environment": env or {},
    }


@pytest.mark.slow
def test_pytorch_torch_distributed_on_two_hosts_through_the_toolkit(store, tmp_path, bwrap_mode):
    req = framework_request(
        store, PYTORCH, DDP, count=2, hps={"epochs": "3", "sagemaker_torch_distributed_enabled": "true"}
    )
    lines = []
    res = run_training_job(
        req,
        job_name="fw-ddp",
        store=store,
        job_dir=tmp_path / "j",
        on_log=lambda h, line: lines.append((h, line)),
    )
    assert res.status == "Completed", res.failure_reason
    assert json.loads(model_files(store, "fw-ddp")["model.json"]) == {
        "hosts": ["algo-1", "algo-2"],
        "sum": 3.0,
        "epochs": 3,
    }
    text = "\n".join(line for _, line in lines)
    # the toolkit's own launch: the PyTorch image's training module chose torchrun across both hosts
    assert "SM_FRAMEWORK_MODULE=sagemaker_pytorch_container.training:main" in text
    assert "torchrun --nnodes 2 --nproc_per_node 1 --master_addr algo-1 --master_port 7777" in text
    assert any(h == "algo-2" and "--node_rank 1" in line for h, line in lines)
    assert "Reporting training SUCCESS" in text


@pytest.mark.slow
def test_a_failing_rank_in_framework_mode_names_its_error(store, tmp_path, bwrap_mode):
    req = framework_request(
        store, PYTORCH, DDP, count=2, hps={"epochs": "1", "sagemaker_torch_distributed_enabled": "true"},
        env={"FAIL_RANK": "1"},
    )  # fmt: skip
    res = run_training_job(req, job_name="fw-fail", store=store, job_dir=tmp_path / "j")
    assert res.status == "Failed"
    assert res.failure_reason.startswith("ValueError: no rows in shard 1"), res.failure_reason


def test_a_scikit_learn_estimator_gets_its_hyperparameters_as_arguments(store, tmp_path, bwrap_mode):
    script = textwrap.dedent(
        """
        import argparse, json, os
        p = argparse.ArgumentParser()
        p.add_argument("--n-estimators", type=int)
        p.add_argument("--criterion")
        args, _ = p.parse_known_args()
        with open(os.path.join(os.environ["SM_MODEL_DIR"], "args.json"), "w") as f:
            json.dump({"n": args.n_estimators, "criterion": args.criterion,
                       "hps": json.loads(os.environ["SM_HPS"])}, f)
        """
    )
    req = framework_request(
        store, SKLEARN, script, count=1, hps={"n-estimators": "50", "criterion": '"gini"'}
    )
    res = run_training_job(req, job_name="fw-sk", store=store, job_dir=tmp_path / "j")
    assert res.status == "Completed", res.failure_reason
    got = json.loads(model_files(store, "fw-sk")["args.json"])
    assert got == {"n": 50, "criterion": "gini", "hps": {"n-estimators": 50, "criterion": "gini"}}
