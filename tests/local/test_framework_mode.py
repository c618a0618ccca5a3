"""Framework estimators (``sagemaker_program`` / ``sagemaker_submit_directory``) run the way their image does:
through the real ``sagemaker-training`` toolkit and, on PyTorch images, ``sagemaker-pytorch-training``."""

from __future__ import annotations

import json
import textwrap

import pytest

from mlops.local.aws_standin import LocalAws
from mlops.local.runtime import run_processing_job, run_training_job
from tests.archives import targz
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


def test_a_scikit_learn_estimator_gets_its_hyperparameters_as_arguments(store, tmp_path, mode):
    """In both sandbox modes: without namespaces the submit directory's container path is mapped too."""
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


# A small pure-Python requirement with a dependency of its own, in neither the project's env nor an image's.
REQUIREMENTS = "# what the entry point imports\npython-slugify==8.0.4\n--prefer-binary\n"
USES_REQUIREMENT = textwrap.dedent(
    """
    import json, os, sys
    import slugify, text_unidecode
    out = os.environ.get("SM_MODEL_DIR") or sys.argv[1]
    with open(os.path.join(out, "req.json"), "w") as f:
        json.dump({"slug": slugify.slugify("Hello World, Ünïcode"), "file": slugify.__file__}, f)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("image", [PYTORCH, SKLEARN], ids=["project-overlay", "uv-env"])
def test_the_submit_directorys_requirements_are_installed_as_the_toolkit_asks(
    store, tmp_path, bwrap_mode, image
):
    """SDK-style code: ``sagemaker_submit_directory`` an S3 tarball with a requirements.txt; the toolkit's own
    ``pip install -r requirements.txt`` runs in the job (no index reachable) and finds it satisfied."""
    store.put_bytes(
        "s3://b/src/sourcedir.tar.gz",
        targz({"train.py": USES_REQUIREMENT, "requirements.txt": REQUIREMENTS}),
    )
    req = framework_request(store, image, "", count=1, hps={})
    req["HyperParameters"]["sagemaker_submit_directory"] = '"s3://b/src/sourcedir.tar.gz"'
    req["InputDataConfig"] = []
    lines = []
    with LocalAws(tmp_path, "us-east-1") as aws:  # the toolkit downloads the tarball through the S3 API
        res = run_training_job(
            req, job_name="fw-req", store=store, job_dir=tmp_path / "j", services=aws,
            on_log=lambda h, line: lines.append(line),
        )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    got = json.loads(model_files(store, "fw-req")["req.json"])
    assert got["slug"] == "hello-world-unicode"
    log = "\n".join(lines)
    assert (
        "installing 1 requirements of requirements.txt of s3://b/src/sourcedir.tar.gz before the job" in log
    )
    assert "'--prefer-binary' is left to pip in the job" in log
    assert "Requirement already satisfied: python-slugify==8.0.4" in log  # the toolkit's pip, in the job
    assert "Installing dependencies from requirements.txt" in log


def _unsatisfiable(store, requirements: str) -> dict:
    store.put_bytes(
        "s3://b/src/sourcedir.tar.gz",
        targz({"train.py": "print('entry point ran')\n", "requirements.txt": requirements}),
    )
    req = framework_request(store, PYTORCH, "", count=1, hps={})
    req["HyperParameters"]["sagemaker_submit_directory"] = '"s3://b/src/sourcedir.tar.gz"'
    req["InputDataConfig"] = []
    return req


def test_a_requirement_left_to_pip_in_the_job_fails_there_naming_it(store, tmp_path, bwrap_mode):
    """A local wheel path cannot be installed before the job: pip in the job, with no index, names it."""
    req = _unsatisfiable(store, "./wheels/private_pkg-1.0-py3-none-any.whl\n")
    lines = []
    with LocalAws(tmp_path, "us-east-1") as aws:
        res = run_training_job(
            req, job_name="fw-unsat", store=store, job_dir=tmp_path / "j", services=aws,
            on_log=lambda h, line: lines.append(line),
        )  # fmt: skip
    assert res.status == "Failed"
    assert res.failure_reason.startswith("InstallRequirementsError"), res.failure_reason
    assert "private_pkg-1.0-py3-none-any.whl" in res.failure_reason
    assert "entry point ran" not in "\n".join(lines)


def test_a_requirement_not_on_the_index_stops_the_job_before_start(store, tmp_path, bwrap_mode):
    from mlops.local.runtime import JobRequestError

    req = _unsatisfiable(store, "mlops-no-such-package-zz==1.0\n")
    with pytest.raises(
        JobRequestError,
        match=r"mlops-no-such-package-zz was not found.*\(with requirements.txt of s3://b/src/sourcedir.tar.gz\)",
    ):
        run_training_job(req, job_name="fw-unsat", store=store, job_dir=tmp_path / "j")


RUNPROC = textwrap.dedent(
    """\
    #!/bin/bash
    cd /opt/ml/processing/input/code/
    tar -xzf sourcedir.tar.gz
    set -e
    if [[ -f 'requirements.txt' ]]; then
        pip uninstall --yes typing
        pip install -r requirements.txt
    fi
    python3 process.py "$@"
    """
)  # what the SDK's FrameworkProcessor generates as its entrypoint (sagemaker.processing, v2)


@pytest.mark.slow
def test_a_framework_processor_installs_its_requirements(store, tmp_path, bwrap_mode):
    store.put_bytes(
        "s3://b/proc/sourcedir.tar.gz",
        targz({"process.py": USES_REQUIREMENT, "requirements.txt": REQUIREMENTS}),
    )
    store.put_bytes("s3://b/proc/runproc.sh", RUNPROC.encode())
    req = {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 30}},
        "AppSpecification": {
            "ImageUri": SKLEARN,
            "ContainerEntrypoint": ["/bin/bash", "/opt/ml/processing/input/entrypoint/runproc.sh"],
            "ContainerArguments": ["/opt/ml/processing/output"],
        },
        "ProcessingInputs": [
            {"InputName": "code", "S3Input": {"S3Uri": "s3://b/proc/sourcedir.tar.gz", "LocalPath": "/opt/ml/processing/input/code/",
                                               "S3DataType": "S3Prefix", "S3InputMode": "File"}},
            {"InputName": "entrypoint", "S3Input": {"S3Uri": "s3://b/proc/runproc.sh", "LocalPath": "/opt/ml/processing/input/entrypoint",
                                                     "S3DataType": "S3Prefix", "S3InputMode": "File"}},
        ],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": "o", "S3Output": {"S3Uri": "s3://b/proc-out", "LocalPath": "/opt/ml/processing/output", "S3UploadMode": "EndOfJob"}}]},
        "RoleArn": "arn:aws:iam::111122223333:role/x",
    }  # fmt: skip
    lines = []
    res = run_processing_job(
        req, job_name="fp-1", store=store, job_dir=tmp_path / "p", on_log=lambda h, line: lines.append(line)
    )
    assert res.status == "Completed", (res.failure_reason, lines[-20:])
    assert json.loads(store.path("s3://b/proc-out/req.json").read_text())["slug"] == "hello-world-unicode"
    assert any("Requirement already satisfied: python-slugify==8.0.4" in line for line in lines)
