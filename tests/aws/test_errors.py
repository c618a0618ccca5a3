"""Errors users meet, each one line: a real HTTP endpoint that answers like AWS does when things go wrong."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from mlops.aws import pipelines_api as api
from mlops.aws.session import (
    Aws,
    AwsAccessDenied,
    AwsCredentialsError,
    AwsError,
    AwsNotFound,
    AwsThrottled,
    check_region,
)

from .conftest import hand_made_definition, names

PIPELINE = "digits-model-build"


class FakeAws:
    """Answers every request with one canned JSON error and counts the attempts."""

    def __init__(self, status: int, body: dict):
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _aws(endpoint, monkeypatch, attempts=3) -> Aws:
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return Aws("eu-west-1", max_attempts=attempts)


DENIED = (
    "User: arn:aws:sts::123456789012:assumed-role/ci/build is not authorized to perform: "
    "sagemaker:DescribePipeline on resource: arn:aws:sagemaker:eu-west-1:123456789012:pipeline/digits-model-build "
    "because no identity-based policy allows the sagemaker:DescribePipeline action"
)
CASES = [
    (
        "throttled",
        400,
        {"__type": "ThrottlingException", "message": "Rate exceeded"},
        AwsThrottled,
        r"^AWS throttled sagemaker:DescribePipeline on pipeline digits-model-build \(3 attempts with backoff\); try again later$",
        3,
    ),
    (
        "access denied",
        400,
        {"__type": "AccessDeniedException", "Message": DENIED},
        AwsAccessDenied,
        r"^access denied: sagemaker:DescribePipeline on arn:aws:sagemaker:eu-west-1:123456789012:pipeline/digits-model-build "
        r"\(grant it to the calling role\)$",
        1,
    ),
    (
        "expired credentials",
        400,
        {
            "__type": "ExpiredTokenException",
            "message": "The security token included in the request is expired",
        },
        AwsCredentialsError,
        r"^AWS rejected the credentials for sagemaker:DescribePipeline \(ExpiredTokenException\)",
        1,
    ),
    (
        "other validation",
        400,
        {"__type": "ValidationException", "message": "Role is not assumable by SageMaker"},
        AwsError,
        r"^sagemaker:DescribePipeline on pipeline digits-model-build failed: ValidationException: Role is not assumable by SageMaker$",
        1,
    ),
]


@pytest.mark.parametrize("label, status, body, kind, message, attempts", CASES, ids=[c[0] for c in CASES])
def test_aws_failures_become_one_line(monkeypatch, label, status, body, kind, message, attempts):
    with FakeAws(status, body) as endpoint:
        aws = _aws(endpoint, monkeypatch)
        with pytest.raises(kind, match=message) as err:
            api.describe_pipeline(aws, PIPELINE)
    assert "\n" not in str(err.value) and "testing" not in str(err.value)


def test_throttling_is_retried_with_backoff_before_it_is_reported(monkeypatch):
    server = FakeAws(400, {"__type": "ThrottlingException", "message": "Rate exceeded"})
    with server as endpoint:
        with pytest.raises(AwsThrottled):
            api.describe_pipeline(_aws(endpoint, monkeypatch, attempts=3), PIPELINE)
    assert server.requests == 3


def test_access_denied_is_not_retried(monkeypatch):
    server = FakeAws(400, {"__type": "AccessDeniedException", "Message": DENIED})
    with server as endpoint:
        with pytest.raises(AwsAccessDenied):
            api.describe_pipeline(_aws(endpoint, monkeypatch, attempts=5), PIPELINE)
    assert server.requests == 1


def test_no_credentials(monkeypatch, tmp_path):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached: signing fails first
    aws = Aws("eu-west-1", session=boto3.Session(region_name="eu-west-1"), max_attempts=1)
    with pytest.raises(
        AwsCredentialsError,
        match=r"^no AWS credentials found for sagemaker:DescribePipeline: set AWS_PROFILE",
    ):
        api.describe_pipeline(aws, PIPELINE)


@pytest.mark.parametrize("region", ["eu-west-9", "us-esat-1"])
def test_wrong_region_is_named(region):
    with pytest.raises(AwsError, match=rf"^aws.region '{region}': sagemaker is not offered in that region"):
        check_region(region)


def test_a_real_region_passes():
    check_region("eu-west-1")


def test_pipeline_not_found_on_moto(aws, cfg):
    arn = f"arn:aws:sagemaker:eu-west-1:123456789012:pipeline/{PIPELINE}/execution/nope"
    with pytest.raises(AwsNotFound, match=rf"^not found: {arn} \(sagemaker:DescribePipelineExecution"):
        api.status(aws, arn)
    assert api.describe_pipeline(aws, "nope") is None


def test_missing_role_is_named_before_any_pipeline_call(aws, cfg):
    with pytest.raises(AwsNotFound, match="^aws.role_arn: role digits-ci-sagemaker-execution does not exist"):
        api.upsert(aws, cfg, {"model-build": hand_made_definition(cfg)}, names(cfg), commit="x")
    assert boto3.client("sagemaker").list_pipelines()["PipelineSummaries"] == []


def test_an_unreachable_endpoint_names_it_and_the_region_setting(monkeypatch):
    aws = _aws("http://127.0.0.1:9", monkeypatch, attempts=1)  # port 9 (discard): nothing listens
    with pytest.raises(
        AwsError, match=r"^sagemaker:DescribePipeline: cannot reach http://127.0.0.1:9/?; check aws.region"
    ):
        api.describe_pipeline(aws, PIPELINE)
