"""Fixture model dirs (unpacked model.tar.gz layouts) and a scratch MLOPS home for serving tests."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mlops.serving import supervisor
from tests.project import ROOT as PROJECT_ROOT

# Sums each row, with the server's default input_fn/output_fn. model_fn records its calls so a test can
# check the model is loaded once per worker, not per request.
SUM_INFERENCE = """
import contextlib
import os
import sys
from pathlib import Path

import numpy as np


def model_fn(model_dir):
    # One write: the server runs unbuffered, where print() writes the text and its newline apart and two
    # workers' lines can interleave. The server log, as a sandboxed server's model dir is read-only.
    sys.stdout.write(f"model_fn pid {os.getpid()}\\n")
    sys.stdout.flush()
    with contextlib.suppress(OSError), open(Path(model_dir) / "loads.log", "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    offset = float((Path(model_dir) / "offset.txt").read_text())
    return lambda x: np.atleast_2d(x).sum(axis=1) + offset
"""

# The same as a torch module: the default predict_fn's tensor path, under torch.inference_mode.
TORCH_SUM_INFERENCE = """
import contextlib
import os
import sys
from pathlib import Path

import torch


class Sum(torch.nn.Module):
    def __init__(self, offset):
        super().__init__()
        self.offset = offset

    def forward(self, x):
        assert torch.is_inference_mode_enabled()
        return torch.atleast_2d(x).sum(dim=1) + self.offset


def model_fn(model_dir):
    # One write: the server runs unbuffered, where print() writes the text and its newline apart and two
    # workers' lines can interleave. The server log, as a sandboxed server's model dir is read-only.
    sys.stdout.write(f"model_fn pid {os.getpid()}\\n")
    sys.stdout.flush()
    with contextlib.suppress(OSError), open(Path(model_dir) / "loads.log", "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    return Sum(float((Path(model_dir) / "offset.txt").read_text()))
"""

# predict_fn raises for one magic input (a model bug), ValueError for another (bad input).
FLAKY_INFERENCE = """
import json


def model_fn(model_dir):
    return "model"


def input_fn(body, content_type):
    if content_type != "application/json":
        raise ValueError(f"only JSON, got {content_type}")
    return json.loads(body)


def predict_fn(data, model):
    if data == "boom":
        raise RuntimeError("exploded on purpose")
    if data == "bad":
        raise ValueError("data must not be 'bad'")
    return {"echo": data}


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


def make_model_dir(root: Path, name: str, source: str, offset: float = 0.0) -> Path:
    model_dir = root / name
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(textwrap.dedent(source))
    (model_dir / "offset.txt").write_text(str(offset))
    return model_dir


SOURCES = {"sum": SUM_INFERENCE, "torch-sum": TORCH_SUM_INFERENCE, "flaky": FLAKY_INFERENCE}


@pytest.fixture(scope="session")
def make_model():
    """``make_model(root, name, kind="sum"|"torch-sum"|"flaky", offset=0.0) -> model dir``."""

    def make(root: Path, name: str, kind: str = "sum", offset: float = 0.0) -> Path:
        return make_model_dir(root, name, SOURCES[kind], offset)

    return make


@pytest.fixture
def sum_model(tmp_path) -> Path:
    return make_model_dir(tmp_path / "models", "sum-v1", SUM_INFERENCE)


@pytest.fixture
def flaky_model(tmp_path) -> Path:
    return make_model_dir(tmp_path / "models", "flaky", FLAKY_INFERENCE)


@pytest.fixture
def home(tmp_path):
    """A scratch MLOPS home; every endpoint left running by a test is stopped afterwards."""
    path = tmp_path / "mlops"
    yield path
    for info in supervisor.list_endpoints(home=path):
        supervisor.stop_endpoint(info.name, home=path)


def train_digits_model(model_dir: Path, epochs: int = 60) -> tuple[Any, Any]:
    """A digits model dir laid out the way steps/train/code/train.py saves one; returns the held-out rows."""
    import shutil

    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    code = PROJECT_ROOT / "steps" / "train" / "code"
    sys.path.insert(0, str(code))
    try:
        from model import build_model
    finally:
        sys.path.remove(str(code))
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    config = {"input_size": 64, "hidden_units": 64, "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    features, labels = torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
    (model_dir / "code").mkdir(parents=True)
    torch.save(model.state_dict(), model_dir / "model.pth")
    (model_dir / "model_config.json").write_text(json.dumps(config))
    for name in ("inference.py", "model.py"):
        shutil.copy(code / name, model_dir / "code" / name)
    return x_test, y_test


@pytest.fixture(scope="session")
def digits_model(tmp_path_factory):
    """A trained digits model dir served by the training step's own inference.py, and held-out rows."""
    if not (PROJECT_ROOT / "steps" / "train" / "code" / "inference.py").is_file():
        pytest.skip("steps/train/code/inference.py is not there yet")
    model_dir = tmp_path_factory.mktemp("digits") / "digits-v1"
    x_test, y_test = train_digits_model(model_dir)
    return model_dir, x_test, y_test


@contextlib.contextmanager
def runtime_api_process(home: Path, *extra: str):
    """``mlops endpoints api`` as a user starts it, on a free port: yields (url, the first line it printed)."""
    port = supervisor.free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.cli.main", "endpoints", "api", "--port", str(port), "--home", str(home),
         *extra],  # fmt: skip
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        export = proc.stdout.readline().strip()
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(url, timeout=1)
            except urllib.error.HTTPError:
                break  # it answers (404 for GET /)
            except OSError:
                time.sleep(0.05)
        yield url, export
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
