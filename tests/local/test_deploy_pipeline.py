"""The compiled model-deploy definition run by the local executor: real endpoints, real smoke test job.

The smoke-test and ops jobs call AWS from inside their network namespaces exactly as on SageMaker
(sagemaker-runtime InvokeEndpoint, CloudWatch, Application Auto Scaling); locally a gateway answers them
(local endpoints; moto's server for the rest).
"""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from mlops.compile.compiler import compile_pipelines
from mlops.local.s3store import S3Store
from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home
from mlops.serving import supervisor
from steps.preprocess.data import write_digits_csv
from tests.project import PROJECT, load_config

from ..conftest import ROOT
from ..container import run_in_container

pytestmark = pytest.mark.slow
GROUP = "digits-classifier"


@pytest.fixture(scope="module")
def deploy_definition():
    return compile_pipelines(PROJECT, load_config("local")).definition("model-deploy")


@pytest.fixture(scope="module")
def digits_rows(tmp_path_factory):
    csv = tmp_path_factory.mktemp("digits") / "digits.csv"
    write_digits_csv(csv)
    lines = csv.read_text().splitlines()
    return lines[0], lines[1:]


@pytest.fixture(scope="module")
def model_tar(tmp_path_factory, digits_rows):
    """A real trained model.tar.gz: train.py in a container layout, one process, a few epochs."""
    header, rows = digits_rows
    root = tmp_path_factory.mktemp("train")
    ml = root / "ml"
    for name, part in (("train", rows[:1400]), ("validation", rows[1400:])):
        (ml / "input" / "data" / name).mkdir(parents=True)
        (ml / "input" / "data" / name / "part.csv").write_text("\n".join([header, *part]) + "\n")
    env = {"SM_MODEL_DIR": "/opt/ml/model", "SM_CHANNEL_TRAIN": "/opt/ml/input/data/train",
           "SM_CHANNEL_VALIDATION": "/opt/ml/input/data/validation"}  # fmt: skip
    proc = run_in_container(
        ["python3", str(ROOT / "steps/train/code/train.py"), "--epochs", "8"], ml, env=env
    )
    assert proc.returncode == 0, proc.stderr
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        tar.add(ml / "model", arcname=".")
    return out.getvalue()


@pytest.fixture
def home(tmp_path, deploy_definition):
    home = Home.open(tmp_path / "home")
    from mlops.compile.compiler import compile_cached

    store = S3Store(home.s3_root)
    for bundle in compile_cached(PROJECT, load_config("local")).bundles:
        store.put_tree(bundle.s3_uri, bundle.source)
    yield home
    for endpoint in supervisor.list_endpoints(home=home.root):
        supervisor.stop_endpoint(endpoint.name, home=home.root)


def register(home: Home, model: bytes, status: str = "Approved") -> str:
    uri = "s3://mlops-local/digits/local/models/test/model.tar.gz"
    S3Store(home.s3_root).put_bytes(uri, model)
    package = home.registry.register(
        GROUP, "arn:aws:sagemaker:us-east-1:123456789012:model-package", approval_status=status,
        model_data_url=uri, image="local", content_types=["application/json"], metrics={}, request={},
    )  # fmt: skip
    return package["arn"]


def samples(home: Home, digits_rows, shift: int = 0) -> str:
    header, rows = digits_rows
    if shift:  # wrong labels: the smoke test's accuracy floor must catch it
        rows = [",".join([*r.split(",")[:-1], str((int(r.split(",")[-1]) + shift) % 10)]) for r in rows]
    uri = f"s3://mlops-local/digits/local/smoke-{shift}/"
    S3Store(home.s3_root).put_bytes(uri + "samples.csv", ("\n".join([header, *rows[-200:]]) + "\n").encode())
    return uri


def deploy(home, definition, arn, **params):
    ports = {"digits-staging": supervisor.free_port(), "digits-production": supervisor.free_port()}
    return run_definition(
        definition, home=home.root, params={"ModelPackageArn": arn, **params}, endpoint_ports=ports
    )


def test_approved_package_is_deployed_smoke_tested_and_answers(
    home, deploy_definition, model_tar, digits_rows
):
    arn = register(home, model_tar)
    record = deploy(home, deploy_definition, arn, SmokeTestDataUri=samples(home, digits_rows))
    assert record.status == "Succeeded", record.failure_reason
    assert {n: s.status for n, s in record.steps.items()} == {
        "CreateModel": "Succeeded", "StagingEndpointConfig": "Succeeded", "StagingEndpoint": "Succeeded",
        "SmokeTest": "Succeeded", "PromoteToProduction": "Succeeded", "ProductionEndpointConfig": "Succeeded",
        "ProductionAlarms": "Succeeded", "ProductionEndpoint": "Succeeded", "ProductionAutoscaling": "Succeeded",
    }  # fmt: skip
    header, rows = digits_rows
    known = [r.split(",") for r in rows[:20]]
    body = json.dumps({"instances": [[float(v) for v in r[:-1]] for r in known]}).encode()
    answer = supervisor.invoke("digits-production", body, home=home.root)
    assert answer.status == 200
    predicted = [p["label"] for p in json.loads(answer.body)["predictions"]]
    expected = [int(r[-1]) for r in known]
    assert sum(p == e for p, e in zip(predicted, expected, strict=True)) >= 18
    # the smoke test job ran inside its namespace and reached staging through the gateway
    smoke_log = "\n".join(open(p).read() for p in record.steps["SmokeTest"].log_paths)
    assert '"passed": true' in smoke_log
    # staging captures every invocation (data_capture_percent 100): the smoke test's 100 requests
    cfg = load_config("local")
    captured = S3Store(home.s3_root).list(f"{cfg.aws.s3_root}/data-capture/staging/digits-staging/AllTraffic/")
    assert len(captured) == cfg.endpoints.smoke_test.samples
    event = json.loads(S3Store(home.s3_root).path(captured[0]).read_text())["captureData"]
    assert event["endpointInput"]["encoding"] == "JSON" and "instances" in event["endpointInput"]["data"]
    assert "predictions" in event["endpointOutput"]["data"]


def test_failed_smoke_test_stops_before_production(home, deploy_definition, model_tar, digits_rows):
    arn = register(home, model_tar)
    record = deploy(home, deploy_definition, arn, SmokeTestDataUri=samples(home, digits_rows, shift=3))
    assert record.status == "Failed"
    assert "smoke test failed: accuracy" in record.steps["SmokeTest"].failure_reason
    assert record.steps["ProductionEndpoint"].status != "Succeeded"
    assert [e.name for e in supervisor.list_endpoints(home=home.root)] == ["digits-staging"]


def test_staging_only_and_unapproved_packages(home, deploy_definition, model_tar, digits_rows):
    pending = register(home, model_tar, status="PendingManualApproval")
    refused = deploy(home, deploy_definition, pending, SmokeTestDataUri=samples(home, digits_rows))
    assert refused.status == "Failed"
    assert "is PendingManualApproval, not Approved" in refused.steps["StagingEndpoint"].failure_reason
    assert supervisor.list_endpoints(home=home.root) == []

    arn = register(home, model_tar)
    record = deploy(
        home, deploy_definition, arn, TargetStage="staging", SmokeTestDataUri=samples(home, digits_rows)
    )
    assert record.status == "Succeeded"
    assert record.steps["ProductionEndpoint"].status == "NotExecuted"
    assert [e.name for e in supervisor.list_endpoints(home=home.root)] == ["digits-staging"]


def test_a_stage_configured_asynchronous_takes_invoke_endpoint_async(
    home, model_tar, digits_rows, monkeypatch
):
    """config endpoints.staging.asynchronous -> the EndpointConfig's AsyncInferenceConfig -> an endpoint that
    boto3's invoke_endpoint_async reaches through the runtime API, answering under the configured path."""
    import boto3

    from mlops.local.async_inference import AsyncQueue, wait_for
    from mlops.serving.runtime_api import RuntimeApiServer

    monkeypatch.setenv("MLOPS__ENDPOINTS__STAGING__ASYNCHRONOUS__MAX_CONCURRENT_INVOCATIONS", "2")
    monkeypatch.setenv("MLOPS__ENDPOINTS__SMOKE_TEST__MAX_P95_LATENCY_MS", "10000")  # a queue's round trip
    monkeypatch.setenv("MLOPS__ENDPOINTS__SMOKE_TEST__SAMPLES", "20")
    cfg = load_config("local")
    definition = compile_pipelines(PROJECT, cfg).definition("model-deploy")
    arn = register(home, model_tar)
    record = deploy(home, definition, arn, SmokeTestDataUri=samples(home, digits_rows), TargetStage="staging")
    assert record.status == "Succeeded", record.failure_reason
    info = supervisor.get_endpoint("digits-staging", home=home.root)
    assert info.async_config["ClientConfig"] == {"MaxConcurrentInvocationsPerInstance": 2}
    # the smoke test job went through S3 and InvokeEndpointAsync from inside its namespace
    smoke_log = "\n".join(open(p).read() for p in record.steps["SmokeTest"].log_paths)
    assert '"passed": true' in smoke_log and '"samples": 20' in smoke_log
    inputs = S3Store(home.s3_root).list(f"{cfg.aws.s3_root}/async/staging/smoke-test-input/")
    assert len(inputs) == 20
    header, rows = digits_rows
    store = S3Store(home.s3_root)
    known = [r.split(",") for r in rows[:5]]
    store.put_bytes(
        "s3://mlops-local/requests/five.json",
        json.dumps({"instances": [[float(v) for v in r[:-1]] for r in known]}).encode(),
    )
    queue = AsyncQueue(home.root)
    with RuntimeApiServer(home.root, backend=queue) as api:
        runtime = boto3.client(
            "sagemaker-runtime", endpoint_url=api.url, region_name="us-east-1", aws_access_key_id="x",
            aws_secret_access_key="x",
        )  # fmt: skip
        answer = runtime.invoke_endpoint_async(
            EndpointName="digits-staging", InputLocation="s3://mlops-local/requests/five.json",
            ContentType="application/json",
        )  # fmt: skip
        assert answer["OutputLocation"].startswith(f"{cfg.aws.s3_root}/async/staging/output/")
        assert wait_for(store, answer["OutputLocation"], timeout=60)
    queue.close()
    predictions = json.loads(store.path(answer["OutputLocation"]).read_text())["predictions"]
    assert len(predictions) == 5
