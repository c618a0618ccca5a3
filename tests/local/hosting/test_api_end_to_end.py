"""``mlops endpoints api`` as an application meets it: the real boto3 ``sagemaker``, ``sagemaker-runtime`` and
``application-autoscaling`` clients, pointed by ``mlops endpoints url``'s variables at one local API,
create a model and an endpoint, invoke it, and a target-tracking policy scales its instances with load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.config import Config

from mlops.local.s3store import S3Store
from tests.archives import targz
from tests.local.hosting.test_endpoints import OFFSET
from tests.serving.conftest import runtime_api_process

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
PERIOD_S = 0.4  # one CloudWatch minute, for the scaling policies


@pytest.fixture
def api(tmp_path, monkeypatch):
    S3Store(tmp_path / "s3").put_bytes(
        "s3://b/models/m.tar.gz", targz({"code/inference.py": OFFSET, "offset.txt": "10"})
    )
    with runtime_api_process(tmp_path, "--scaling-period-s", str(PERIOD_S)) as (url, _):
        exports = subprocess.run(
            [sys.executable, "-m", "mlops.cli.main", "endpoints", "url", "--port", url.rsplit(":", 1)[1]],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        for line in exports.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            monkeypatch.setenv(key, value)
        for key, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
                           "AWS_DEFAULT_REGION": "eu-west-1"}.items():  # fmt: skip
            monkeypatch.setenv(key, value)
        yield url
        with_clients = boto3.client("sagemaker")
        for endpoint in with_clients.list_endpoints()["Endpoints"]:
            with_clients.delete_endpoint(EndpointName=endpoint["EndpointName"])


def clients():
    config = Config(retries={"max_attempts": 1})
    return (boto3.client("sagemaker", config=config), boto3.client("sagemaker-runtime", config=config),
            boto3.client("application-autoscaling", config=config))  # fmt: skip


def test_the_exports_name_all_three_services(api):
    assert {os.environ[v] for v in ("AWS_ENDPOINT_URL_SAGEMAKER", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME",
                                    "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING")} == {api}  # fmt: skip


def test_load_raises_the_instance_count_and_idleness_lowers_it(api, tmp_path):
    home = str(tmp_path)
    sm, runtime, scaling = clients()
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE,
                    PrimaryContainer={"Image": "local/serving:1", "ModelDataUrl": "s3://b/models/m.tar.gz"})  # fmt: skip
    sm.create_endpoint_config(EndpointConfigName="c", ProductionVariants=[
        {"VariantName": "AllTraffic", "ModelName": "m", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])  # fmt: skip
    sm.create_endpoint(EndpointName="scaled", EndpointConfigName="c")
    sm.get_waiter("endpoint_in_service").wait(
        EndpointName="scaled", WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    body = runtime.invoke_endpoint(EndpointName="scaled", Body="[1]", ContentType="application/json")["Body"]
    assert body.read() == b"[11.0]"
    listed = subprocess.run(
        [sys.executable, "-m", "mlops.cli.main", "endpoints", "list", "--format", "json", "--home", home],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (hosted,) = [e for e in json.loads(listed) if e.get("kind") == "hosted"]
    assert (
        hosted["name"] == "scaled" and hosted["status"] == "InService" and hosted["running_containers"] >= 1
    )
    assert hosted["variants"] == [
        {"VariantName": "AllTraffic", "ModelName": "m", "Weight": 1.0, "InstanceCount": 1}
    ]

    resource = "endpoint/scaled/variant/AllTraffic"
    scaling.register_scalable_target(ServiceNamespace="sagemaker", ResourceId=resource,
                                     ScalableDimension="sagemaker:variant:DesiredInstanceCount",
                                     MinCapacity=1, MaxCapacity=2)  # fmt: skip
    scaling.put_scaling_policy(
        PolicyName="per-instance", ServiceNamespace="sagemaker", ResourceId=resource,
        ScalableDimension="sagemaker:variant:DesiredInstanceCount", PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5.0, "ScaleInCooldown": 0, "ScaleOutCooldown": 0,
            "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}},
    )  # fmt: skip

    def count() -> tuple[int, int]:
        variant = sm.describe_endpoint(EndpointName="scaled")["ProductionVariants"][0]
        return variant["CurrentInstanceCount"], variant["DesiredInstanceCount"]

    stop = threading.Event()

    def load() -> None:  # far above 5 invocations per instance per (local) minute
        while not stop.is_set():
            runtime.invoke_endpoint(EndpointName="scaled", Body="[1]", ContentType="application/json")

    worker = threading.Thread(target=load)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while count() != (2, 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert count() == (2, 2)
    finally:
        stop.set()
        worker.join()

    def descriptions() -> list[str]:
        activities = scaling.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=resource)
        return [a["Description"] for a in activities["ScalingActivities"] if a["StatusCode"] == "Successful"]

    deadline = time.monotonic() + 60  # 15 low minutes, then one instance goes (recorded once it has stopped)
    while not any("to 1" in d for d in descriptions()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert count() == (1, 1)
    assert any("to 2" in d for d in descriptions()) and any("to 1" in d for d in descriptions()), (
        descriptions()
    )


def test_what_the_control_plane_refuses_reaches_the_client_by_name(api):
    sm, runtime, _ = clients()
    with pytest.raises(sm.exceptions.ClientError, match='Could not find model "nope"'):
        sm.create_endpoint_config(EndpointConfigName="x", ProductionVariants=[
            {"VariantName": "A", "ModelName": "nope", "InstanceType": "ml.m5.large", "InitialInstanceCount": 1}])  # fmt: skip
    with pytest.raises(runtime.exceptions.ValidationError, match="Endpoint ghost not found"):
        runtime.invoke_endpoint(EndpointName="ghost", Body="[1]", ContentType="application/json")
