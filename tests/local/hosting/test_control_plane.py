"""The local ``sagemaker`` control plane through the real boto3 client: models, endpoint configs, endpoints
(over an in-memory Hosting that flips statuses), real transform jobs, and the service's errors."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, WaiterError
from botocore.validate import ParamValidator

from mlops.local.hosting.control_plane import ControlPlane
from mlops.local.runtime import sandbox
from mlops.local.s3store import S3Store
from tests.archives import targz
from tests.project import ROOT

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
FAST = {"Delay": 0.2, "MaxAttempts": 150}


class MemoryHosting:
    """The Hosting seam: records calls; an endpoint goes InService ``delay`` s after create/update (None:
    only when ``finish`` says so); ``fail_update`` makes the next update end InService with that reason."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.endpoints: dict[str, dict] = {}
        self.delay: float | None = 0.3
        self.fail_update: str | None = None
        self._lock = threading.Lock()

    def _variants(self, config: dict) -> list[dict]:
        return [
            {"VariantName": v["VariantName"], "CurrentWeight": v.get("InitialVariantWeight", 1.0),
             "DesiredWeight": v.get("InitialVariantWeight", 1.0),
             "CurrentInstanceCount": v["InitialInstanceCount"], "DesiredInstanceCount": v["InitialInstanceCount"],
             "DeployedImages": [{"SpecifiedImage": "img", "ResolvedImage": "img", "ResolutionTime": datetime.now(UTC)}]}
            for v in config["ProductionVariants"]
        ]  # fmt: skip

    def _later(self, name: str) -> None:
        if self.delay is not None:
            timer = threading.Timer(self.delay, self.finish, args=(name,))
            timer.daemon = True
            timer.start()

    def create_endpoint(self, name, config, models):
        self.calls.append(("create", name, config, models))
        now = datetime.now(UTC)
        with self._lock:
            self.endpoints[name] = {"EndpointStatus": "Creating", "ProductionVariants": [], "CreationTime": now,
                                    "LastModifiedTime": now, "_next": config}  # fmt: skip
        self._later(name)

    def update_endpoint(self, name, config, models):
        self.calls.append(("update", name, config, models))
        with self._lock:
            self.endpoints[name].update(EndpointStatus="Updating", _next=config, _fail=self.fail_update)
            self.fail_update = None
        self._later(name)

    def finish(self, name: str) -> None:
        with self._lock:
            ep = self.endpoints.get(name)
            if ep is None or ep["EndpointStatus"] not in ("Creating", "Updating"):
                return
            ep["LastModifiedTime"] = datetime.now(UTC)
            if reason := ep.pop("_fail", None):
                ep.update(EndpointStatus="InService", FailureReason=f"Update failed: {reason}")
            else:
                ep.update(EndpointStatus="InService", ProductionVariants=self._variants(ep["_next"]))
                ep.pop("FailureReason", None)

    def delete_endpoint(self, name):
        self.calls.append(("delete", name))
        with self._lock:
            self.endpoints.pop(name)

    def describe_endpoint(self, name):
        with self._lock:
            ep = self.endpoints.get(name)
            return None if ep is None else {k: v for k, v in ep.items() if not k.startswith("_")}

    def list_endpoints(self):
        return sorted(self.endpoints)

    def update_weights_and_capacities(self, name, desired):
        self.calls.append(("weights", name, desired))
        with self._lock:
            for d in desired:
                for v in self.endpoints[name]["ProductionVariants"]:
                    if v["VariantName"] == d["VariantName"]:
                        v["DesiredWeight"] = v["CurrentWeight"] = d.get("DesiredWeight", v["DesiredWeight"])


def _handler(cp: ControlPlane):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, headers, payload = cp.handle(self.headers.get("X-Amz-Target"), body)
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


@pytest.fixture
def api(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    home = tmp_path / "mlops"
    store = S3Store(home / "s3")
    hosting = MemoryHosting()
    cp = ControlPlane(home, hosting, store)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cp))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def client(**config):
        return boto3.client(
            "sagemaker", endpoint_url=url, region_name="eu-west-1", aws_access_key_id="local",
            aws_secret_access_key="local", config=Config(retries={"max_attempts": 1}, **config),
        )  # fmt: skip

    yield SimpleNamespace(home=home, store=store, hosting=hosting, cp=cp, sm=client(),
                          raw=client(parameter_validation=False), url=url)  # fmt: skip
    cp.close(timeout=30)
    server.shutdown()
    server.server_close()


def error(excinfo) -> tuple[str, str]:
    err = excinfo.value.response["Error"]
    return err["Code"], err["Message"]


def check_output(sm, operation: str, response: dict) -> None:
    """The answer satisfies the operation's output shape (required members, types), as the service's does."""
    shape = sm.meta.service_model.operation_model(operation).output_shape
    body = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    report = ParamValidator().validate(body, shape)
    assert not report.has_errors(), report.generate_report()


# -- models -----------------------------------------------------------------------------------------------


def model_request(name="m1", url="s3://b/model/model.tar.gz", **extra):
    return {"ModelName": name, "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {"Image": "img", "ModelDataUrl": url, "Environment": {"A": "1"}}, **extra}  # fmt: skip


def test_models_round_trip_with_lists_filters_and_pages(api):
    api.store.put_bytes("s3://b/model/model.tar.gz", targz({"w.txt": "1"}))
    arn = api.sm.create_model(**model_request())["ModelArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:123456789012:model/m1"  # the account of the role, not invented
    described = api.sm.describe_model(ModelName="m1")
    check_output(api.sm, "DescribeModel", described)
    assert described["ModelArn"] == arn and described["PrimaryContainer"]["Environment"] == {"A": "1"}
    assert described["ExecutionRoleArn"] == ROLE and described["CreationTime"].tzinfo is not None
    record = json.loads((api.home / "hosting" / "models" / "m1.json").read_text())
    assert record["ModelArn"] == arn and record["Request"]["PrimaryContainer"]["Image"] == "img"

    for i in range(5):
        api.sm.create_model(**model_request(f"other-{i}"))
    assert [m["ModelName"] for m in api.sm.list_models(NameContains="OTHER", SortBy="Name", SortOrder="Ascending")[
        "Models"]] == [f"other-{i}" for i in range(5)]  # fmt: skip
    after_m1 = api.sm.list_models(CreationTimeAfter=described["CreationTime"])["Models"]
    assert "m1" not in [m["ModelName"] for m in after_m1] and len(after_m1) == 5
    newest_first = api.sm.list_models()["Models"]
    assert newest_first[0]["ModelName"] == "other-4" and newest_first[-1]["ModelName"] == "m1"
    pages = list(api.sm.get_paginator("list_models").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(p["Models"]) for p in pages] == [2, 2, 2]
    assert sorted(m["ModelName"] for p in pages for m in p["Models"]) == [
        "m1",
        *[f"other-{i}" for i in range(5)],
    ]

    with pytest.raises(ClientError) as exc:  # names are unique whatever their case (the ARN is lower-case)
        api.sm.create_model(**model_request("M1"))
    assert error(exc) == ("ValidationException", f'Cannot create already existing model "{arn}".')
    api.sm.delete_model(ModelName="m1")
    with pytest.raises(ClientError) as exc:
        api.sm.describe_model(ModelName="m1")
    assert error(exc) == ("ValidationException", 'Could not find model "m1".')
    with pytest.raises(ClientError) as exc:
        api.sm.delete_model(ModelName="m1")
    assert error(exc)[0] == "ValidationException"


def test_create_model_checks_what_the_service_checks(api):
    api.store.put_bytes("s3://b/mme/a.tar.gz", b"x")
    with pytest.raises(ClientError) as exc:
        api.sm.create_model(**model_request(url="s3://b/missing/model.tar.gz"))
    code, message = error(exc)
    assert code == "ValidationException" and "s3://b/missing/model.tar.gz" in message and "upload" in message
    # a prefix of objects is model data too (a multi-model container's)
    api.sm.create_model(ModelName="mme", PrimaryContainer={"Image": "img", "Mode": "MultiModel",
                                                           "ModelDataUrl": "s3://b/mme/"})  # fmt: skip
    with pytest.raises(ClientError) as exc:
        api.sm.create_model(ModelName="both", PrimaryContainer={"Image": "i"}, Containers=[{"Image": "i"}])
    assert "exactly one of PrimaryContainer or Containers" in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        api.sm.create_model(ModelName="neither")
    assert "exactly one of PrimaryContainer or Containers" in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        api.sm.create_model(ModelName="p", Containers=[{"Image": "a"}, {"Image": "b"}],
                            InferenceExecutionConfig={"Mode": "Parallel"})  # fmt: skip
    code, message = error(exc)
    assert code == "ValidationException" and "'InferenceExecutionConfig.Mode'" in message
    assert "[Serial, Direct]" in message
    with pytest.raises(ClientError) as exc:  # the service's name pattern (botocore's client leaves it)
        api.sm.create_model(ModelName="bad_name", PrimaryContainer={"Image": "i"})
    assert "'ModelName'" in error(exc)[1] and "regular expression" in error(exc)[1]
    # what botocore's ParamValidator finds, found here too when a client does not check
    with pytest.raises(ClientError) as exc:
        api.raw.create_model(PrimaryContainer={"Image": "i"})
    assert error(exc) == ("ValidationException",
                          '1 validation error detected: Missing required parameter in input: "ModelName"')  # fmt: skip
    with pytest.raises(ClientError) as exc:
        api.raw.create_model(ModelName="t", PrimaryContainer={"Image": 7})
    assert "PrimaryContainer.Image" in error(exc)[1] and error(exc)[0] == "ValidationException"
    assert not (api.home / "hosting" / "models" / "t.json").exists()


def test_operations_that_are_not_emulated_say_so(api):
    with pytest.raises(ClientError) as exc:
        api.sm.list_training_jobs()
    code, message = error(exc)
    assert (
        code == "UnknownOperationException" and "ListTrainingJobs" in message and "CreateEndpoint" in message
    )
    status, _, body = api.cp.handle("SageMaker.NoSuchThing", b"{}")
    assert status == 400 and "not an operation of the SageMaker API" in json.loads(body)["message"]
    status, _, body = api.cp.handle("SageMaker.ListModels", b"{not json")
    assert status == 400 and json.loads(body)["__type"] == "SerializationException"


# -- endpoint configs and endpoints ----------------------------------------------------------------------


def config_request(name="cfg-1", models=("m1",), **extra):
    variants = [{"VariantName": f"v{i}", "ModelName": m, "InstanceType": "ml.m5.large", "InitialInstanceCount": 1,
                 "InitialVariantWeight": 1.0} for i, m in enumerate(models)]  # fmt: skip
    return {"EndpointConfigName": name, "ProductionVariants": variants, **extra}


def seed_models(api, *names):
    api.store.put_bytes("s3://b/model/model.tar.gz", targz({"w.txt": "1"}))
    for name in names:
        api.sm.create_model(**model_request(name))


def test_endpoint_configs_round_trip_and_name_their_models(api):
    seed_models(api, "m1", "m2")
    with pytest.raises(ClientError) as exc:
        api.sm.create_endpoint_config(**config_request(models=("m1", "nope")))
    assert error(exc) == ("ValidationException", 'Could not find model "nope".')
    capture = {"InitialSamplingPercentage": 50, "DestinationS3Uri": "s3://b/capture",
               "CaptureOptions": [{"CaptureMode": "Input"}]}  # fmt: skip
    arn = api.sm.create_endpoint_config(**config_request(models=("m1", "m2"), DataCaptureConfig=capture))[
        "EndpointConfigArn"
    ]
    assert arn == "arn:aws:sagemaker:eu-west-1:123456789012:endpoint-config/cfg-1"
    described = api.sm.describe_endpoint_config(EndpointConfigName="cfg-1")
    check_output(api.sm, "DescribeEndpointConfig", described)
    assert [v["ModelName"] for v in described["ProductionVariants"]] == ["m1", "m2"]
    assert described["DataCaptureConfig"]["DestinationS3Uri"] == "s3://b/capture"
    assert (api.home / "hosting" / "endpoint-configs" / "cfg-1.json").is_file()
    with pytest.raises(ClientError) as exc:
        api.sm.create_endpoint_config(**config_request())
    assert error(exc) == (
        "ValidationException",
        f'Cannot create already existing endpoint configuration "{arn}".',
    )
    api.sm.create_endpoint_config(**config_request("cfg-2"))
    listed = api.sm.list_endpoint_configs(NameContains="cfg", SortBy="Name", SortOrder="Ascending")
    assert [c["EndpointConfigName"] for c in listed["EndpointConfigs"]] == ["cfg-1", "cfg-2"]
    api.sm.delete_endpoint_config(EndpointConfigName="cfg-2")
    with pytest.raises(ClientError) as exc:
        api.sm.describe_endpoint_config(EndpointConfigName="cfg-2")
    assert error(exc) == ("ValidationException", 'Could not find endpoint configuration "cfg-2".')


def test_an_endpoint_is_created_served_updated_and_deleted_through_the_hosting(api):
    seed_models(api, "m1", "m2")
    async_config = {"OutputConfig": {"S3OutputPath": "s3://b/async-out"}}
    api.sm.create_endpoint_config(**config_request("cfg-1", DataCaptureConfig={
        "InitialSamplingPercentage": 20, "DestinationS3Uri": "s3://b/capture",
        "CaptureOptions": [{"CaptureMode": "Input"}]}, AsyncInferenceConfig=async_config))  # fmt: skip
    api.sm.create_endpoint_config(**config_request("cfg-2", models=("m1", "m2")))
    with pytest.raises(ClientError) as exc:
        api.sm.create_endpoint(EndpointName="ep", EndpointConfigName="missing")
    assert error(exc) == ("ValidationException", 'Could not find endpoint configuration "missing".')

    arn = api.sm.create_endpoint(EndpointName="ep", EndpointConfigName="cfg-1")["EndpointArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:123456789012:endpoint/ep"
    kind, name, config, models = api.hosting.calls[-1]
    assert (kind, name, config["EndpointConfigName"]) == ("create", "ep", "cfg-1")
    assert models == {"m1": {**model_request("m1")}}  # the CreateModel request as made
    assert api.sm.describe_endpoint(EndpointName="ep")["EndpointStatus"] == "Creating"
    api.sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST)
    described = api.sm.describe_endpoint(EndpointName="ep")
    check_output(api.sm, "DescribeEndpoint", described)
    assert described["EndpointArn"] == arn and described["EndpointConfigName"] == "cfg-1"
    assert described["ProductionVariants"][0]["VariantName"] == "v0"
    assert described["ProductionVariants"][0]["DeployedImages"][0]["ResolutionTime"].tzinfo is not None
    assert described["DataCaptureConfig"] == {"EnableCapture": True, "CaptureStatus": "Started",
                                              "CurrentSamplingPercentage": 20, "DestinationS3Uri": "s3://b/capture",
                                              "KmsKeyId": ""}  # fmt: skip
    assert described["AsyncInferenceConfig"] == async_config
    record = json.loads((api.home / "hosting" / "endpoints" / "ep.json").read_text())
    assert record["EndpointConfigName"] == "cfg-1" and record["EndpointArn"] == arn
    with pytest.raises(ClientError) as exc:
        api.sm.create_endpoint(EndpointName="ep", EndpointConfigName="cfg-1")
    assert error(exc) == ("ValidationException", f'Cannot create already existing endpoint "{arn}".')
    listed = api.sm.list_endpoints(StatusEquals="InService")["Endpoints"]
    assert [(e["EndpointName"], e["EndpointStatus"]) for e in listed] == [("ep", "InService")]

    # an update: the old config serves (and is named) until the hosting is done with the new one
    api.hosting.delay = None
    api.sm.update_endpoint(EndpointName="ep", EndpointConfigName="cfg-2")
    assert api.hosting.calls[-1][0] == "update" and set(api.hosting.calls[-1][3]) == {"m1", "m2"}
    during = api.sm.describe_endpoint(EndpointName="ep")
    assert during["EndpointStatus"] == "Updating" and during["EndpointConfigName"] == "cfg-1"
    assert during["PendingDeploymentSummary"]["EndpointConfigName"] == "cfg-2"
    with pytest.raises(ClientError) as exc:
        api.sm.update_endpoint(EndpointName="ep", EndpointConfigName="cfg-1")
    assert error(exc) == ("ValidationException", f'Cannot update in-progress endpoint "{arn}".')
    api.hosting.finish("ep")
    after = api.sm.describe_endpoint(EndpointName="ep")
    assert after["EndpointConfigName"] == "cfg-2" and "PendingDeploymentSummary" not in after
    assert [v["VariantName"] for v in after["ProductionVariants"]] == ["v0", "v1"]
    assert "DataCaptureConfig" not in after  # cfg-2 captures nothing

    # a failed update keeps the old config, InService, with the reason
    api.hosting.fail_update = "no such image"
    api.sm.update_endpoint(EndpointName="ep", EndpointConfigName="cfg-1")
    api.hosting.finish("ep")
    failed = api.sm.describe_endpoint(EndpointName="ep")
    assert failed["EndpointStatus"] == "InService" and failed["EndpointConfigName"] == "cfg-2"
    assert "Update failed" in failed["FailureReason"]

    api.sm.update_endpoint_weights_and_capacities(
        EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "v1", "DesiredWeight": 3.0}]
    )
    assert api.hosting.calls[-1] == ("weights", "ep", [{"VariantName": "v1", "DesiredWeight": 3.0}])
    with pytest.raises(ClientError) as exc:
        api.sm.update_endpoint_weights_and_capacities(
            EndpointName="ep", DesiredWeightsAndCapacities=[{"VariantName": "v9", "DesiredWeight": 1.0}]
        )
    assert error(exc)[0] == "ValidationException" and "v9" in error(exc)[1]

    # RetainAllVariantProperties: the weights the endpoint has now, not the new config's initial ones
    api.sm.update_endpoint(EndpointName="ep", EndpointConfigName="cfg-2", RetainAllVariantProperties=True)
    retained = api.hosting.calls[-1][2]["ProductionVariants"]
    assert [v["InitialVariantWeight"] for v in retained] == [1.0, 3.0]
    api.hosting.finish("ep")

    api.sm.delete_endpoint(EndpointName="ep")
    assert api.hosting.calls[-1] == ("delete", "ep")
    assert not (api.home / "hosting" / "endpoints" / "ep.json").exists()
    with pytest.raises(ClientError) as exc:
        api.sm.describe_endpoint(EndpointName="ep")
    assert error(exc) == ("ValidationException", 'Could not find endpoint "ep".')
    with pytest.raises(ClientError) as exc:
        api.sm.delete_endpoint(EndpointName="ep")
    assert error(exc) == ("ValidationException", 'Could not find endpoint "ep".')


def test_the_waiter_fails_on_an_endpoint_the_hosting_lost(api):
    seed_models(api, "m1")
    api.sm.create_endpoint_config(**config_request())
    api.sm.create_endpoint(EndpointName="ep", EndpointConfigName="cfg-1")
    api.hosting.endpoints.clear()  # e.g. its processes are gone
    with pytest.raises(WaiterError, match="Failed"):
        api.sm.get_waiter("endpoint_in_service").wait(EndpointName="ep", WaiterConfig=FAST)
    assert "create it again" in api.sm.describe_endpoint(EndpointName="ep")["FailureReason"]
    api.sm.delete_endpoint(EndpointName="ep")  # still deletable
    assert api.sm.list_endpoints()["Endpoints"] == []


# -- transform jobs (real: sandboxed serving containers) ---------------------------------------------------

INFERENCE = textwrap.dedent(
    """
    import os, signal, time
    def model_fn(model_dir):
        if os.environ.get("SLOW_LOAD"):
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a stop ends it at once, not after the grace period
            time.sleep(60)
        weight = float(open(os.path.join(model_dir, "weight.txt")).read())
        def model(x):
            return (x.sum(axis=1) * weight).reshape(-1, 1)
        return model
    """
)


@pytest.fixture
def transform(api, monkeypatch):
    if not sandbox.bwrap_works():
        pytest.skip("bwrap cannot create namespaces on this machine")
    monkeypatch.setenv("MLOPS_SANDBOX", sandbox.BWRAP)
    api.store.put_bytes(
        "s3://b/model/model.tar.gz", targz({"weight.txt": "2", "code/inference.py": INFERENCE})
    )
    for i, rows in enumerate((5, 3)):
        api.store.put_bytes(f"s3://b/in/part-{i}.csv", "".join(f"{r},{i}\n" for r in range(rows)).encode())
    api.sm.create_model(**model_request("tm"))
    return api


def job_request(name="t-1", **extra):
    return {
        "TransformJobName": name, "ModelName": "tm",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": "s3://b/out", "AssembleWith": "Line", "Accept": "text/csv"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        **extra,
    }  # fmt: skip


def test_a_transform_job_runs_for_real_and_the_waiter_sees_it_complete(transform):
    api = transform
    arn = api.sm.create_transform_job(**job_request())["TransformJobArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:123456789012:transform-job/t-1"
    api.sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="t-1", WaiterConfig=FAST)
    described = api.sm.describe_transform_job(TransformJobName="t-1")
    check_output(api.sm, "DescribeTransformJob", described)
    assert described["TransformJobStatus"] == "Completed", described.get("FailureReason")
    assert described["TransformStartTime"] <= described["TransformEndTime"]
    assert described["TransformInput"]["SplitType"] == "Line" and described["ModelName"] == "tm"
    assert api.store.list("s3://b/out/") == ["s3://b/out/part-0.csv.out", "s3://b/out/part-1.csv.out"]
    assert api.store.path("s3://b/out/part-1.csv.out").read_text().split() == ["2.0", "4.0", "6.0"]
    record = json.loads((api.home / "hosting" / "transform-jobs" / "t-1" / "record.json").read_text())
    assert record["TransformJobStatus"] == "Completed"
    summaries = api.sm.list_transform_jobs(StatusEquals="Completed")["TransformJobSummaries"]
    assert [s["TransformJobName"] for s in summaries] == ["t-1"]

    with pytest.raises(ClientError) as exc:
        api.sm.create_transform_job(**job_request())
    assert error(exc)[0] == "ResourceInUse" and arn in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        api.sm.describe_transform_job(TransformJobName="nope")
    assert error(exc)[0] == "ResourceNotFound" and "nope" in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        api.sm.create_transform_job(**job_request("t-2", ModelName="nope"))
    assert error(exc) == ("ValidationException", 'Could not find model "nope".')
    # what the service checks synchronously fails the call itself, and leaves no job behind
    with pytest.raises(ClientError) as exc:
        api.sm.create_transform_job(**job_request("t-3", MaxConcurrentTransforms=20, MaxPayloadInMB=10))
    assert error(exc)[0] == "ValidationException" and "MaxPayloadInMB" in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        api.sm.create_transform_job(**job_request("t-3", TransformInput={
            **job_request()["TransformInput"], "SplitType": "Paragraph"}))  # fmt: skip
    assert "'TransformInput.SplitType'" in error(exc)[1]
    with pytest.raises(ClientError) as exc:
        api.sm.describe_transform_job(TransformJobName="t-3")
    assert error(exc)[0] == "ResourceNotFound"
    # what SageMaker finds only once the job runs fails the job
    api.sm.create_transform_job(**job_request("t-4", TransformInput={
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/nothing-here"}}}))  # fmt: skip
    with pytest.raises(WaiterError):
        api.sm.get_waiter("transform_job_completed_or_stopped").wait(
            TransformJobName="t-4", WaiterConfig=FAST
        )
    failed = api.sm.describe_transform_job(TransformJobName="t-4")
    assert failed["TransformJobStatus"] == "Failed" and "s3://b/nothing-here" in failed["FailureReason"]


def test_stopping_a_slow_job_stops_it_and_uploads_nothing(transform):
    api = transform
    api.sm.create_transform_job(**job_request("slow", Environment={"SLOW_LOAD": "1"}))
    time.sleep(1.0)
    assert api.sm.describe_transform_job(TransformJobName="slow")["TransformJobStatus"] == "InProgress"
    api.sm.stop_transform_job(TransformJobName="slow")
    assert api.sm.describe_transform_job(TransformJobName="slow")["TransformJobStatus"] in (
        "Stopping",
        "Stopped",
    )
    api.sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="slow", WaiterConfig=FAST)
    stopped = api.sm.describe_transform_job(TransformJobName="slow")
    assert stopped["TransformJobStatus"] == "Stopped" and "TransformEndTime" in stopped
    assert api.store.list("s3://b/out/") == []
    with pytest.raises(ClientError) as exc:
        api.sm.stop_transform_job(TransformJobName="slow")
    assert error(exc)[0] == "ValidationException" and "Stopped" in error(exc)[1]


def test_closing_the_api_ends_its_jobs_as_failed_saying_why(transform):
    api = transform
    api.sm.create_transform_job(**job_request("slow", Environment={"SLOW_LOAD": "1"}))
    time.sleep(0.5)
    api.cp.close(timeout=30)
    assert api.cp.running_jobs() == []
    described = api.sm.describe_transform_job(TransformJobName="slow")
    assert described["TransformJobStatus"] == "Failed" and "shut down" in described["FailureReason"]


_RUN_ELSEWHERE = """
import sys, time
from pathlib import Path
from mlops.local.s3store import S3Store
from mlops.local.hosting.control_plane import ControlPlane
home = Path(sys.argv[1])
cp = ControlPlane(home, None, S3Store(home / "s3"))
status, _, body = cp.handle("SageMaker.CreateTransformJob", sys.argv[2].encode())
print(status, body.decode(), flush=True)
time.sleep(300)
"""


def test_a_job_whose_process_died_reads_as_failed(transform):
    api = transform
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_ELSEWHERE, str(api.home), json.dumps(job_request("orphan", Environment={"SLOW_LOAD": "1"}))],
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("200 "), line
        # alive elsewhere: still InProgress here, and not ours to stop
        assert api.sm.describe_transform_job(TransformJobName="orphan")["TransformJobStatus"] == "InProgress"
        with pytest.raises(ClientError) as exc:
            api.sm.stop_transform_job(TransformJobName="orphan")
        assert "another process" in error(exc)[1]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    described = api.sm.describe_transform_job(TransformJobName="orphan")
    assert described["TransformJobStatus"] == "Failed"
    assert (
        f"process {proc.pid}" in described["FailureReason"] and "stopped before" in described["FailureReason"]
    )
    record = json.loads((api.home / "hosting" / "transform-jobs" / "orphan" / "record.json").read_text())
    assert record["TransformJobStatus"] == "Failed"  # written back: every later reader sees the same
