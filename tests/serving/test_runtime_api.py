"""Application code reaches local endpoints unchanged: boto3's sagemaker-runtime and the AWS CLI against
``mlops endpoints api`` (a real server process), answers and errors in the API's shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mlops.serving import supervisor
from mlops.serving.runtime_api import ENV_VAR
from tests.serving.conftest import runtime_api_process

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def api(tmp_path_factory, make_model):
    home = tmp_path_factory.mktemp("mlops")
    model_dir = make_model(tmp_path_factory.mktemp("models"), "sum", offset=1.0)
    supervisor.start_endpoint("sums", model_dir, supervisor.free_port(), home=home, workers=1)
    with runtime_api_process(home) as (url, export):
        yield {"url": url, "export": export, "home": home}
    supervisor.stop_endpoint("sums", home=home)


def client(url: str):
    return boto3.client(
        "sagemaker-runtime", endpoint_url=url, region_name="us-east-1", aws_access_key_id="local",
        aws_secret_access_key="local", config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def test_the_api_prints_what_to_export(api):
    assert api["export"] == f"export {ENV_VAR}={api['url']}"


def test_boto3_invoke_endpoint_answers_as_the_api_does(api):
    response = client(api["url"]).invoke_endpoint(
        EndpointName="sums", Body=json.dumps([[1, 2], [3, 4]]), ContentType="application/json",
        Accept="application/json",
    )  # fmt: skip
    assert json.loads(response["Body"].read()) == [4.0, 8.0]
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"


def test_boto3_finds_the_api_through_the_environment_variable(api, monkeypatch):
    monkeypatch.setenv(ENV_VAR, api["url"])
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    body = (
        boto3.client("sagemaker-runtime")
        .invoke_endpoint(EndpointName="sums", Body="5,6\n", ContentType="text/csv", Accept="text/csv")["Body"]
        .read()
    )
    assert body.decode().strip() == "12.0"


def test_an_unknown_endpoint_is_a_validation_error(api):
    with pytest.raises(ClientError) as err:
        client(api["url"]).invoke_endpoint(EndpointName="nope", Body=b"[]", ContentType="application/json")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint nope not found." in err.value.response["Error"]["Message"]


def test_a_bad_payload_is_a_model_error_with_the_containers_status(api):
    runtime = client(api["url"])
    with pytest.raises(runtime.exceptions.ModelError) as err:
        runtime.invoke_endpoint(EndpointName="sums", Body=b"{not json", ContentType="application/json")
    assert err.value.response["OriginalStatusCode"] == 400
    assert "Received client error (400) from model" in err.value.response["Error"]["Message"]
    # the endpoint still answers afterwards
    ok = runtime.invoke_endpoint(EndpointName="sums", Body="[[1]]", ContentType="application/json")
    assert json.loads(ok["Body"].read()) == [2.0]


def test_the_aws_cli_invokes_a_local_endpoint(api, tmp_path):
    aws = os.path.join(os.path.dirname(sys.executable), "aws")
    out = tmp_path / "out.json"
    proc = subprocess.run(
        [aws, "sagemaker-runtime", "invoke-endpoint", "--endpoint-name", "sums", "--body", "[[10, 20]]",
         "--content-type", "application/json", str(out)],
        env={**os.environ, **CREDENTIALS, ENV_VAR: api["url"]}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == [31.0]
    assert json.loads(proc.stdout)["InvokedProductionVariant"] == "AllTraffic"


@pytest.fixture(scope="module")
def captured(tmp_path_factory, make_model):
    """An endpoint capturing half of its invocations, behind an in-process API with the store's capture."""
    from mlops.local.data_capture import DataCapture
    from mlops.serving.runtime_api import RuntimeApiServer

    home = tmp_path_factory.mktemp("mlops")
    model_dir = make_model(tmp_path_factory.mktemp("models"), "sum")
    config = {
        "EnableCapture": True, "InitialSamplingPercentage": 50, "DestinationS3Uri": "s3://capture/endpoints",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }  # fmt: skip
    supervisor.start_endpoint(
        "cap", model_dir, supervisor.free_port(), home=home, workers=1, data_capture=config
    )
    with RuntimeApiServer(home, capture=DataCapture(home)) as server:
        yield {"home": home, "url": server.url}
    supervisor.stop_endpoint("cap", home=home)


def test_data_capture_samples_the_configured_share_in_sagemakers_format(captured):
    from mlops.local.s3store import S3Store

    runtime = client(captured["url"])
    for i in range(200):
        runtime.invoke_endpoint(
            EndpointName="cap", Body=f"{i},1\n", ContentType="text/csv", Accept="text/csv"
        )
    files = S3Store(captured["home"] / "s3").list("s3://capture/endpoints/cap/AllTraffic/")
    assert 50 < len(files) < 150  # 50% of 200: outside this band once in about 10^12 runs
    record = json.loads(S3Store(captured["home"] / "s3").path(files[0]).read_text())
    data = record["captureData"]
    assert data["endpointInput"]["mode"] == "INPUT" and data["endpointInput"]["encoding"] == "CSV"
    assert data["endpointInput"]["observedContentType"] == "text/csv"
    i = int(data["endpointInput"]["data"].split(",")[0])
    assert (
        data["endpointOutput"]["mode"] == "OUTPUT" and data["endpointOutput"]["data"].strip() == f"{i + 1}.0"
    )
    assert record["eventVersion"] == "0" and record["eventMetadata"]["eventId"]
    # the key carries the endpoint, the variant and the hour, as SageMaker lays captures out
    assert files[0].split("/")[4:6] == ["cap", "AllTraffic"] and len(files[0].split("/")) == 11


def test_a_binary_payload_is_captured_in_base64(captured):
    import base64

    from mlops.local.data_capture import DataCapture
    from mlops.serving.supervisor import get_endpoint

    info = get_endpoint("cap", home=captured["home"])
    sink = DataCapture(captured["home"], sample=lambda: 0.0)
    uri = sink.record(info, "AllTraffic", (b"\x89PNG\x00", "image/png"), (b'{"a": 1}', "application/json"))
    from mlops.local.s3store import S3Store

    record = json.loads(S3Store(captured["home"] / "s3").path(uri).read_text())["captureData"]
    assert record["endpointInput"]["encoding"] == "BASE64"
    assert base64.b64decode(record["endpointInput"]["data"]) == b"\x89PNG\x00"
    assert record["endpointOutput"] == {
        "observedContentType": "application/json", "mode": "OUTPUT", "data": '{"a": 1}', "encoding": "JSON",
    }  # fmt: skip
    assert (
        DataCapture(captured["home"], sample=lambda: 0.99).record(
            info, "AllTraffic", (b"x", None), (b"y", "t")
        )
        is None
    )


def test_invoke_endpoint_with_response_stream_gives_the_answer_in_payload_parts(api):
    rows = [[i, 1] for i in range(30_000)]
    response = client(api["url"]).invoke_endpoint_with_response_stream(
        EndpointName="sums", Body=json.dumps(rows), ContentType="application/json", Accept="application/json"
    )
    assert (
        response["ContentType"] == "application/json" and response["InvokedProductionVariant"] == "AllTraffic"
    )
    parts = [event["PayloadPart"]["Bytes"] for event in response["Body"]]
    assert len(parts) >= 2  # over 64 KiB: more than one event, decoded (CRCs and all) by botocore
    assert json.loads(b"".join(parts)) == [i + 2.0 for i in range(30_000)]


def test_a_streamed_invocation_keeps_the_apis_errors(api):
    runtime = client(api["url"])
    with pytest.raises(ClientError) as err:
        runtime.invoke_endpoint_with_response_stream(
            EndpointName="nope", Body=b"[]", ContentType="application/json"
        )
    assert err.value.response["Error"]["Code"] == "ValidationError"
    with pytest.raises(runtime.exceptions.ModelError) as err:
        runtime.invoke_endpoint_with_response_stream(
            EndpointName="sums", Body=b"{x", ContentType="application/json"
        )
    assert err.value.response["OriginalStatusCode"] == 400
