"""Asynchronous endpoints through real clients: boto3's invoke_endpoint_async against ``mlops endpoints api``,
a 200 MB payload from the store to the model and its answer back, failures, notifications, the queue."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mlops.local.async_inference import read_topic, wait_for
from mlops.local.s3store import S3Store
from mlops.serving import supervisor
from tests.serving.conftest import make_model_dir, runtime_api_process

# Answers with the payload's digest and size: the test can tell the model saw every byte.
DIGEST_INFERENCE = """
import hashlib, json, time

def model_fn(model_dir):
    return "digest"

def input_fn(body, content_type):
    if content_type == "text/refused":
        raise ValueError("this model takes bytes")
    if content_type == "text/slow":
        time.sleep(0.5)
    return body

def predict_fn(data, model):
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""
SUCCESS = "arn:aws:sns:us-east-1:123456789012:async-success"
ERROR = "arn:aws:sns:us-east-1:123456789012:async-error"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlops")
    model_dir = make_model_dir(tmp_path_factory.mktemp("models"), "digest", DIGEST_INFERENCE)
    config = {
        "OutputConfig": {
            "S3OutputPath": "s3://answers/out/",
            "S3FailurePath": "s3://answers/failed",
            "NotificationConfig": {"SuccessTopic": SUCCESS, "ErrorTopic": ERROR},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1},
    }
    supervisor.start_endpoint(
        "digest", model_dir, supervisor.free_port(), home=home, workers=1, async_config=config
    )
    supervisor.start_endpoint(
        "realtime", make_model_dir(tmp_path_factory.mktemp("m2"), "rt", DIGEST_INFERENCE), supervisor.free_port(),
        home=home, workers=1,
    )  # fmt: skip
    stack = contextlib.ExitStack()
    url, _ = stack.enter_context(runtime_api_process(home))
    runtime = boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="local",
        aws_secret_access_key="local", config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    yield {"home": home, "runtime": runtime, "store": S3Store(home / "s3")}
    stack.close()
    for name in ("digest", "realtime"):
        supervisor.stop_endpoint(name, home=home)


def test_a_200_mb_payload_goes_from_the_store_to_the_model_and_its_answer_back(api, tmp_path):
    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as f:
        for _ in range(200):
            chunk = os.urandom(1 << 20)
            digest.update(chunk)
            f.write(chunk)
    api["store"].put_file("s3://requests/in/big.bin", big)
    response = api["runtime"].invoke_endpoint_async(
        EndpointName="digest", InputLocation="s3://requests/in/big.bin", ContentType="application/octet-stream",
        InferenceId="big-1",
    )  # fmt: skip
    assert response["InferenceId"] == "big-1"
    assert response["OutputLocation"] == "s3://answers/out/big-1.out"
    assert response["FailureLocation"] == "s3://answers/failed/big-1-error.out"
    assert wait_for(api["store"], response["OutputLocation"], timeout=120)
    answer = json.loads(api["store"].path(response["OutputLocation"]).read_text())
    assert answer == {"sha256": digest.hexdigest(), "bytes": 200 << 20}
    [message] = [m for m in _messages(api, SUCCESS) if m["inferenceId"] == "big-1"]
    assert message["invocationStatus"] == "Completed" and message["eventSource"] == "aws:sagemaker"
    assert message["responseParameters"]["outputLocation"] == "s3://answers/out/big-1.out"


def test_requests_queue_behind_the_concurrency_limit_and_all_answer(api):
    for i in range(4):
        api["store"].put_bytes(f"s3://requests/small/{i}", f"payload {i}".encode())
    started = time.monotonic()
    ids = [
        api["runtime"].invoke_endpoint_async(
            EndpointName="digest", InputLocation=f"s3://requests/small/{i}", ContentType="text/slow"
        )["InferenceId"]
        for i in range(4)
    ]
    answered_at = time.monotonic() - started
    assert answered_at < 1.0  # 202 at once: the work is queued, not done in the request
    for i, inference_id in enumerate(ids):
        uri = f"s3://answers/out/{inference_id}.out"
        assert wait_for(api["store"], uri, timeout=30)
        assert json.loads(api["store"].path(uri).read_text())["bytes"] == len(f"payload {i}")
    # one at a time (MaxConcurrentInvocationsPerInstance 1): four half-second requests take two seconds
    assert time.monotonic() - started >= 2.0


def test_a_model_error_writes_the_failure_and_notifies_the_error_topic(api):
    api["store"].put_bytes("s3://requests/in/refused.bin", b"x")
    response = api["runtime"].invoke_endpoint_async(
        EndpointName="digest", InputLocation="s3://requests/in/refused.bin", ContentType="text/refused",
        InferenceId="bad-1",
    )  # fmt: skip
    assert wait_for(api["store"], response["FailureLocation"], timeout=30)
    failure = api["store"].path(response["FailureLocation"]).read_text()
    assert "Received client error (400) from model" in failure and "this model takes bytes" in failure
    assert not api["store"].exists(response["OutputLocation"])
    [message] = [m for m in _messages(api, ERROR) if m["inferenceId"] == "bad-1"]
    assert (
        message["invocationStatus"] == "Failed"
        and "this model takes bytes" in message["responseParameters"]["failureReason"]
    )


def test_missing_input_fails_the_request_not_the_queue(api):
    response = api["runtime"].invoke_endpoint_async(
        EndpointName="digest", InputLocation="s3://requests/in/nothing", InferenceId="gone-1"
    )
    assert wait_for(api["store"], response["FailureLocation"], timeout=30)
    assert "does not exist" in api["store"].path(response["FailureLocation"]).read_text()


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (
            {"EndpointName": "realtime", "InputLocation": "s3://requests/in/x"},
            "not configured for asynchronous",
        ),
        ({"EndpointName": "nope", "InputLocation": "s3://requests/in/x"}, "Endpoint nope not found."),
        ({"EndpointName": "digest", "InputLocation": "/etc/passwd"}, "InputLocation must be an s3:// URI"),
        ({"EndpointName": "digest", "InputLocation": "s3://r/x", "InferenceId": "../x"}, "InferenceId"),
    ],
)
def test_bad_async_requests_are_validation_errors(api, kwargs, words):
    with pytest.raises(ClientError) as err:
        api["runtime"].invoke_endpoint_async(**kwargs)
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert words in err.value.response["Error"]["Message"]


def test_an_asynchronous_endpoint_takes_no_invoke_endpoint(api):
    with pytest.raises(ClientError) as err:
        api["runtime"].invoke_endpoint(
            EndpointName="digest", Body=b"x", ContentType="application/octet-stream"
        )
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "asynchronous endpoint: call InvokeEndpointAsync" in err.value.response["Error"]["Message"]


def test_the_cli_prints_a_topics_messages(api):
    proc = subprocess.run(
        [sys.executable, "-m", "mlops.cli.main", "endpoints", "notifications", SUCCESS, "--home", str(api["home"])],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert all(json.loads(line)["invocationStatus"] == "Completed" for line in proc.stdout.splitlines())


def _messages(api, topic: str, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = read_topic(api["home"], topic)
        if found:
            return found
        time.sleep(0.1)
    return []
