"""The model server in multi-model mode (SAGEMAKER_MULTI_MODEL=true): TargetModel picks an archive."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time

import pytest

from mlops.serving.supervisor import free_port
from tests.project import ROOT as PROJECT_ROOT

from .test_server import request, shutdown


@pytest.fixture(scope="module")
def mme_server(tmp_path_factory, make_model):
    """A prefix dir with two archives (offsets 0 and 100), one model loaded at a time."""
    root = tmp_path_factory.mktemp("mme")
    prefix = root / "prefix"
    (prefix / "group").mkdir(parents=True)
    for key, offset in (("v1.tar.gz", 0.0), ("group/v2.tar.gz", 100.0)):
        model_dir = make_model(root / "src", key.replace("/", "-"), "sum", offset)
        with tarfile.open(prefix / key, "w:gz") as tar:
            for item in sorted(model_dir.iterdir()):
                tar.add(item, arcname=item.name)
    (prefix / "broken.tar.gz").write_bytes(b"not a tar")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "SAGEMAKER_MULTI_MODEL": "true",
           "MLOPS_MME_MAX_MODELS": "1"}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.serving.server", "--model-dir", str(prefix), "--port", str(port),
         "--workers", "1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if request(port, "GET", "/ping")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    yield port, proc
    if proc.poll() is None:  # the last test stops it to read its log
        shutdown(proc)


def invoke(port: int, target: str | None, row=(1, 2, 3)):
    headers = {"Content-Type": "application/json"}
    if target is not None:
        headers["X-Amzn-SageMaker-Target-Model"] = target
    status, _, body = request(port, "POST", "/invocations", json.dumps([list(row)]).encode(), headers)
    return status, json.loads(body)


@pytest.mark.parametrize(
    "target,status,message",
    [
        (None, 400, "names no TargetModel"),
        ("v9.tar.gz", 404, "no model archive at that key"),
        ("../prefix/v1.tar.gz", 400, "is not a key below the model prefix"),
        ("broken.tar.gz", 400, "not a readable model.tar.gz"),
    ],
)
def test_a_target_model_it_cannot_serve_is_refused_with_the_reason(mme_server, target, status, message):
    port, _ = mme_server
    got, body = invoke(port, target)
    assert got == status and message in body["error"]


def test_each_target_model_answers_with_its_own_archive_and_the_least_recent_is_unloaded(mme_server):
    port, proc = mme_server
    assert invoke(port, "v1.tar.gz") == (200, [6.0])
    assert invoke(port, "group/v2.tar.gz") == (200, [106.0])  # a key below the prefix, with its '/'
    assert invoke(port, "v1.tar.gz") == (200, [6.0])  # loaded again: one model at a time here
    assert invoke(port, "v1.tar.gz") == (200, [6.0])
    output = shutdown(proc)  # the module's last test: its log is complete once it stops
    assert output.count("model_fn pid") == 3, output
    assert "unloaded group/v2.tar.gz (least recently used)" in output
