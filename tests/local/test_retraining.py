"""Retraining trains: a second execution on one home has checkpoints of its own (per execution id), so
the project's train.py runs every epoch on the new data instead of "resuming" the first run's last epoch."""

from __future__ import annotations

import io
import re
import tarfile

import numpy as np
import torch

from mlops.local.s3store import S3Store
from mlops.local.scheduler import run_definition
from tests.local.test_executor import ROLE, definition
from tests.project import ROOT

EPOCHS = 3


def _put_split(store: S3Store, name: str, relabel: bool) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 8)).round(4)
    y = (x[:, 0] > 0).astype(int) * 3
    if relabel:
        y = 9 - y
    rows = ["label," + ",".join(f"f{i}" for i in range(8))]
    rows += [f"{label}," + ",".join(map(str, feats)) for label, feats in zip(y, x, strict=True)]
    store.put_bytes(f"s3://bucket/data/{name}/part.csv", ("\n".join(rows) + "\n").encode())


def _train_step() -> dict:
    channel = lambda name, uri: {  # noqa: E731
        "ChannelName": name, "InputMode": "File",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}},
    }  # fmt: skip
    return {
        "Name": "Train",
        "Type": "Training",
        "Arguments": {
            "AlgorithmSpecification": {
                "TrainingImage": "img", "TrainingInputMode": "File", "ContainerEntrypoint": ["python3"],
                "ContainerArguments": [
                    "/opt/ml/input/data/code/train.py", "--epochs", str(EPOCHS), "--hidden_units", "8",
                ],
            },
            "InputDataConfig": [
                channel("code", "s3://bucket/code"), channel("train", "s3://bucket/data/train"),
                channel("validation", "s3://bucket/data/validation"),
            ],
            "OutputDataConfig": {"S3OutputPath": "s3://bucket/models"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 300},
            "CheckpointConfig": {  # as steps/train/step.py compiles it
                "S3Uri": {"Std:Join": {"On": "/", "Values": [
                    "s3://bucket/checkpoints/train", {"Get": "Execution.PipelineExecutionId"},
                ]}},
                "LocalPath": "/opt/ml/checkpoints",
            },
            "RoleArn": ROLE,
        },
    }  # fmt: skip


def _weights(store: S3Store, record) -> dict[str, torch.Tensor]:
    uri = record.steps["Train"].properties["ModelArtifacts"]["S3ModelArtifacts"]
    with tarfile.open(fileobj=io.BytesIO(store.path(uri).read_bytes())) as tar:
        data = tar.extractfile("model.pth").read()
    return torch.load(io.BytesIO(data), weights_only=True)


def test_a_second_execution_trains_every_epoch_on_the_new_data(tmp_path):
    store = S3Store(tmp_path / "s3")
    code = ROOT / "steps" / "train" / "code"
    for name in ("train.py", "model.py", "inference.py"):
        store.put_file(f"s3://bucket/code/{name}", code / name)
    d = definition(_train_step())
    runs = []
    for relabel in (False, True):
        for split in ("train", "validation"):
            _put_split(store, split, relabel)
        record = run_definition(d, home=tmp_path)
        assert record.status == "Succeeded", record.failure_reason
        runs.append(record)
    first, second = runs
    assert first.id != second.id
    assert store.list(f"s3://bucket/checkpoints/train/{first.id}/")  # synced per execution
    log = open(second.steps["Train"].log_paths[0]).read()
    assert "resumed from epoch" not in log
    assert re.findall(r"epoch=(\d+) ", log) == [str(e) for e in range(1, EPOCHS + 1)]
    w1, w2 = _weights(store, first), _weights(store, second)
    assert w1.keys() == w2.keys()
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)
