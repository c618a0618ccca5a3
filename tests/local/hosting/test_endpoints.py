"""Hosted endpoints (variants, inference pipelines, Direct, multi-model, instance counts) through the real
boto3 ``sagemaker-runtime`` client on HTTP, each container a sandboxed serving host."""

from __future__ import annotations

import collections
import json
import textwrap
import threading

import pytest

from mlops.local.hosting.endpoints import IN_SERVICE, LocalHosting
from mlops.local.s3store import S3Store
from mlops.serving.runtime_api import RuntimeApiServer
from tests.archives import targz
from tests.local.conftest import runtime

# Adds the model's offset to each number of the JSON list it gets; says which model answered.
OFFSET = """
import json
from pathlib import Path

def model_fn(model_dir):
    return float((Path(model_dir) / "offset.txt").read_text())

def input_fn(body, content_type):
    return json.loads(body)

def predict_fn(data, offset):
    return [x + offset for x in data]

def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""

# Sums the list: the second container of a pipeline; answers CSV when asked.
TOTAL = """
import json

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    assert content_type == "application/json", content_type
    return json.loads(body)

def predict_fn(data, model):
    return sum(data)

def output_fn(prediction, accept):
    if accept == "text/csv":
        return f"{prediction}\\n", "text/csv"
    return json.dumps({"total": prediction}), "application/json"
"""


def model_tar(code: str, offset: float = 0.0) -> bytes:
    return targz({"code/inference.py": textwrap.dedent(code), "offset.txt": str(offset)})


def put(store: S3Store, uri: str, data: bytes) -> str:
    store.put_bytes(uri, data)
    return uri


def container(uri: str, **extra) -> dict:
    return {"Image": "local/serving:1", "ModelDataUrl": uri, **extra}


def up(hosting: LocalHosting, name: str, variants: list[dict], models: dict[str, dict]) -> None:
    config = {"EndpointConfigName": f"{name}-config", "ProductionVariants": variants}
    hosting.create_endpoint(name, config, models)
    assert hosting.wait(name, 120) == IN_SERVICE, hosting.describe_endpoint(name)


def call(client, name: str, payload, **extra) -> tuple[object, str, dict]:
    res = client.invoke_endpoint(EndpointName=name, Body=json.dumps(payload), ContentType="application/json",
                                 **extra)  # fmt: skip
    return (
        json.loads(res["Body"].read()),
        res["InvokedProductionVariant"],
        res["ResponseMetadata"]["HTTPHeaders"],
    )


def test_variants_share_traffic_by_weight_and_target_variant_pins_one(hosting):
    hosting, store, url = hosting
    a = put(store, "s3://b/models/a.tar.gz", model_tar(OFFSET, 100))
    b = put(store, "s3://b/models/b.tar.gz", model_tar(OFFSET, 200))
    models = {"ma": {"ModelName": "ma", "PrimaryContainer": container(a)},
              "mb": {"ModelName": "mb", "PrimaryContainer": container(b)}}  # fmt: skip
    up(hosting, "ab", [
        {"VariantName": "A", "ModelName": "ma", "InitialInstanceCount": 1, "InitialVariantWeight": 3.0},
        {"VariantName": "B", "ModelName": "mb", "InitialInstanceCount": 1, "InitialVariantWeight": 1.0},
    ], models)  # fmt: skip
    client = runtime(url)
    counts = collections.Counter()
    for _ in range(1000):
        body, variant, _ = call(client, "ab", [1])
        assert body == [{"A": 101.0, "B": 201.0}[variant]]  # each variant's own model answered
        counts[variant] += 1
    # 750 expected for A; 4.5 standard deviations (sqrt(1000 * 0.75 * 0.25) = 13.7) either side
    assert 688 <= counts["A"] <= 812, counts
    assert all(call(client, "ab", [0], TargetVariant="B")[1] == "B" for _ in range(20))
    with pytest.raises(client.exceptions.ValidationError, match='variant "C" is not present'):
        call(client, "ab", [0], TargetVariant="C")
    described = {v["VariantName"]: v for v in hosting.describe_endpoint("ab")["ProductionVariants"]}
    assert described["A"]["CurrentWeight"] == 3.0 and described["B"]["CurrentInstanceCount"] == 1


def test_a_serial_inference_pipeline_feeds_each_answer_to_the_next_container(hosting):
    hosting, store, url = hosting
    first = put(store, "s3://b/p/offset.tar.gz", model_tar(OFFSET, 10))
    second = put(store, "s3://b/p/total.tar.gz", model_tar(TOTAL))
    model = {"ModelName": "pipe", "Containers": [container(first), container(second)]}
    up(hosting, "pipe", [{"VariantName": "AllTraffic", "ModelName": "pipe", "InitialInstanceCount": 1}],
       {"pipe": model})  # fmt: skip
    client = runtime(url)
    assert call(client, "pipe", [1, 2, 3])[0] == {"total": 36.0}
    res = client.invoke_endpoint(
        EndpointName="pipe", Body="[1]", ContentType="application/json", Accept="text/csv"
    )
    assert res["ContentType"].startswith("text/csv") and res["Body"].read() == b"11.0\n"


def test_direct_invocation_picks_the_container_by_hostname(hosting):
    hosting, store, url = hosting
    a = put(store, "s3://b/d/a.tar.gz", model_tar(OFFSET, 1))
    b = put(store, "s3://b/d/b.tar.gz", model_tar(OFFSET, 2))
    model = {"ModelName": "direct", "InferenceExecutionConfig": {"Mode": "Direct"},
             "Containers": [container(a, ContainerHostname="one"), container(b, ContainerHostname="two")]}  # fmt: skip
    up(hosting, "direct", [{"VariantName": "AllTraffic", "ModelName": "direct", "InitialInstanceCount": 1}],
       {"direct": model})  # fmt: skip
    client = runtime(url)
    assert call(client, "direct", [0], TargetContainerHostname="two")[0] == [2.0]
    assert call(client, "direct", [0], TargetContainerHostname="one")[0] == [1.0]
    with pytest.raises(client.exceptions.ValidationError, match="give TargetContainerHostname"):
        call(client, "direct", [0])
    with pytest.raises(client.exceptions.ValidationError, match="'three' is not a container"):
        call(client, "direct", [0], TargetContainerHostname="three")


def test_multi_model_loads_on_first_call_and_unloads_the_least_recently_used(tmp_path):
    store = S3Store(tmp_path / "s3")
    for i in range(4):
        put(store, f"s3://b/mme/m{i}.tar.gz", model_tar(OFFSET, i))
    probe = LocalHosting(tmp_path / "probe", store, restore=False)
    model = {"ModelName": "many", "PrimaryContainer": container("s3://b/mme/", Mode="MultiModel")}
    variants = [{"VariantName": "AllTraffic", "ModelName": "many", "InitialInstanceCount": 1}]
    try:  # how much one loaded model takes here, to size a budget that holds two
        with RuntimeApiServer(tmp_path, hosting=probe) as api:
            up(probe, "probe", variants, {"many": model})
            call(runtime(api.url), "probe", [0], TargetModel="m0.tar.gz")
            one = probe._endpoints["probe"].variants["AllTraffic"].instances[0].models["m0.tar.gz"].memory
    finally:
        probe.close(delete=True)
    assert one > 0
    hosting = LocalHosting(tmp_path, store, mme_memory_mb=int(2.5 * one / 2**20))
    try:
        with RuntimeApiServer(tmp_path, hosting=hosting) as api:
            client = runtime(api.url)
            up(hosting, "many", variants, {"many": model})
            body, _, headers = call(client, "many", [1], TargetModel="m1.tar.gz")
            assert body == [2.0] and headers["x-mlops-model-cache"].startswith("miss; loaded in")
            assert call(client, "many", [1], TargetModel="m1.tar.gz")[2]["x-mlops-model-cache"] == "hit"
            call(client, "many", [1], TargetModel="m2.tar.gz")
            call(client, "many", [1], TargetModel="m1.tar.gz")  # m1 is now the most recently used
            body, _, _ = call(client, "many", [1], TargetModel="m3.tar.gz")
            assert body == [4.0]
            loaded = hosting.loaded_models("many")["AllTraffic"]["i-1"]
            assert loaded == ["m1.tar.gz", "m3.tar.gz"]  # m2, the least recently used, made room
            assert call(client, "many", [1], TargetModel="m2.tar.gz")[2]["x-mlops-model-cache"].startswith(
                "miss"
            )
            with pytest.raises(
                client.exceptions.ValidationError, match="no object at s3://b/mme/nope.tar.gz"
            ):
                call(client, "many", [1], TargetModel="nope.tar.gz")
            with pytest.raises(client.exceptions.ValidationError, match="give TargetModel"):
                call(client, "many", [1])
            start = hosting.metrics.calls("many", "AllTraffic", 0, 2e9)
            assert [c.cache_hit for c in start if c.cache_hit is not None][:2] == [False, True]
    finally:
        hosting.close(delete=True)


def test_instances_scale_up_and_down_while_requests_keep_being_answered(hosting):
    hosting, store, url = hosting
    a = put(store, "s3://b/s/a.tar.gz", model_tar(OFFSET, 5))
    up(hosting, "scaled", [{"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1}],
       {"m": {"ModelName": "m", "PrimaryContainer": container(a)}})  # fmt: skip
    client = runtime(url)
    stop, answers, errors = threading.Event(), [], []

    def load() -> None:
        while not stop.is_set():
            try:
                answers.append(call(client, "scaled", [1])[0])
            except Exception as err:  # every failure is reported below
                errors.append(err)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        hosting.set("scaled", "AllTraffic", 3, "test")
        assert hosting.describe_endpoint("scaled")["ProductionVariants"][0]["CurrentInstanceCount"] == 3
        hosting.set("scaled", "AllTraffic", 1, "test")
    finally:
        stop.set()
        worker.join()
    assert not errors and answers and all(a == [6.0] for a in answers)
    variant = hosting.describe_endpoint("scaled")["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 1


def test_a_model_that_cannot_load_fails_the_endpoint_with_its_reason(hosting):
    hosting, store, _ = hosting
    bad = put(
        store,
        "s3://b/bad.tar.gz",
        targz({"code/inference.py": "def model_fn(d):\n    raise OSError('no weights')\n"}),
    )
    config = {
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "bad", "InitialInstanceCount": 1}]
    }
    hosting.create_endpoint("bad", config, {"bad": {"ModelName": "bad", "PrimaryContainer": container(bad)}})
    assert hosting.wait("bad", 120) == "Failed"
    reason = hosting.describe_endpoint("bad")["FailureReason"]
    assert "no weights" in reason or "exited during startup" in reason, reason


# Answers the size and digest of what it got: the payload went through whole.
DIGEST = """
import hashlib, json

def model_fn(model_dir):
    return None

def input_fn(body, content_type):
    return body

def predict_fn(data, model):
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


def test_an_async_endpoint_scaled_to_zero_answers_once_an_instance_is_back(tmp_path):
    import hashlib

    from mlops.local.async_inference import AsyncQueue, read_topic, wait_for

    store = S3Store(tmp_path / "s3")
    hosting = LocalHosting(tmp_path, store)
    queue = AsyncQueue(tmp_path, hosting=hosting)
    hosting.backlog = queue.backlog
    model = {
        "ModelName": "m",
        "PrimaryContainer": container(put(store, "s3://b/m.tar.gz", model_tar(DIGEST))),
    }
    config = {
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "m", "InitialInstanceCount": 1}],
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://b/out/", "NotificationConfig": {
            "SuccessTopic": "arn:aws:sns:eu-west-1:000000000000:done"}}},
    }  # fmt: skip
    try:
        with RuntimeApiServer(tmp_path, backend=queue, hosting=hosting) as api:
            hosting.create_endpoint("queued", config, {"m": model})
            assert hosting.wait("queued", 120) == IN_SERVICE
            client = runtime(api.url)
            with pytest.raises(client.exceptions.ValidationError, match="asynchronous endpoint"):
                call(client, "queued", [1])
            hosting.set("queued", "AllTraffic", 0, "idle")
            payload = b"x" * (20 << 20)
            store.put_bytes("s3://b/in/big.bin", payload)
            res = client.invoke_endpoint_async(EndpointName="queued", InputLocation="s3://b/in/big.bin",
                                               ContentType="application/octet-stream")  # fmt: skip
            assert hosting.metric("queued", "AllTraffic", "HasBacklogWithoutCapacity", "Maximum",
                                  *_window()) == 1.0  # fmt: skip
            assert not wait_for(store, res["OutputLocation"], timeout=1.0)  # no instance: it waits
            hosting.set("queued", "AllTraffic", 1, "backlog")
            assert wait_for(store, res["OutputLocation"], timeout=60)
            answer = json.loads(store.path(res["OutputLocation"]).read_bytes())
            assert answer == {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
            assert (
                read_topic(tmp_path, "arn:aws:sns:eu-west-1:000000000000:done")[0]["invocationStatus"]
                == "Completed"
            )
            assert queue.backlog("queued") == 0
    finally:
        queue.close()
        hosting.close(delete=True)


def _window():
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return now - timedelta(minutes=1), now + timedelta(seconds=1)


def test_data_capture_records_what_a_hosted_endpoint_answered(tmp_path):
    from mlops.local.data_capture import DataCapture

    store = S3Store(tmp_path / "s3")
    hosting = LocalHosting(tmp_path, store)
    model = {
        "ModelName": "m",
        "PrimaryContainer": container(put(store, "s3://b/m.tar.gz", model_tar(OFFSET, 1))),
    }
    config = {
        "ProductionVariants": [{"VariantName": "Blue", "ModelName": "m", "InitialInstanceCount": 1}],
        "DataCaptureConfig": {"EnableCapture": True, "InitialSamplingPercentage": 100,
                              "DestinationS3Uri": "s3://b/capture", "CaptureOptions": [
                                  {"CaptureMode": "Input"}, {"CaptureMode": "Output"}]},
    }  # fmt: skip
    try:
        with RuntimeApiServer(tmp_path, hosting=hosting, capture=DataCapture(tmp_path)) as api:
            hosting.create_endpoint("captured", config, {"m": model})
            assert hosting.wait("captured", 120) == IN_SERVICE
            assert call(runtime(api.url), "captured", [41])[0] == [42.0]
        files = list((tmp_path / "s3" / "b" / "capture" / "captured" / "Blue").rglob("*.jsonl"))
        record = json.loads(files[0].read_text().splitlines()[0])
        assert record["captureData"]["endpointInput"]["data"] == "[41]"
        assert record["captureData"]["endpointOutput"]["data"] == "[42.0]"
    finally:
        hosting.close(delete=True)


def test_response_stream_from_a_hosted_variant_and_whole_from_a_pipeline(hosting):
    hosting, store, url = hosting
    a = put(store, "s3://b/st/a.tar.gz", model_tar(OFFSET, 1))
    b = put(store, "s3://b/st/b.tar.gz", model_tar(TOTAL))
    models = {"one": {"ModelName": "one", "PrimaryContainer": container(a)},
              "pipe": {"ModelName": "pipe", "Containers": [container(a), container(b)]}}  # fmt: skip
    up(hosting, "st", [{"VariantName": "Single", "ModelName": "one", "InitialInstanceCount": 1},
                       {"VariantName": "Pipe", "ModelName": "pipe", "InitialInstanceCount": 1}], models)  # fmt: skip
    client = runtime(url)

    def stream(variant: str):
        res = client.invoke_endpoint_with_response_stream(
            EndpointName="st", Body="[1, 2]", ContentType="application/json", TargetVariant=variant
        )
        parts = [e["PayloadPart"]["Bytes"] for e in res["Body"] if "PayloadPart" in e]
        return res["InvokedProductionVariant"], b"".join(parts)

    assert stream("Single") == ("Single", b"[2.0, 3.0]")
    assert stream("Pipe") == ("Pipe", b'{"total": 5.0}')
