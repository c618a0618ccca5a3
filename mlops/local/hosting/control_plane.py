"""The ``sagemaker`` API's model, endpoint-config, endpoint and transform-job calls, answered locally, and
SendPipelineExecutionStepSuccess / Failure for the local Callback steps that wait in this home.

Application and deployment code keep their boto3 ``sagemaker`` client and point its endpoint URL here:
:meth:`ControlPlane.handle` answers one JSON 1.1 request (``X-Amz-Target: SageMaker.<Operation>``) as the
service does, in shapes the real client parses (timestamps as epoch seconds), with the service's errors
(``{"__type": "ValidationException", "message": ...}``, 400).

Requests are checked against botocore's own service model before anything happens: botocore's
``ParamValidator`` (missing required members, wrong types, too short) plus the constraints it leaves to the
service (enums, maximum lengths and values, patterns), each problem naming its member. Then the checks the
service makes synchronously: a resource that exists (``Could not find model "x".``) or already exists
(``Cannot create already existing endpoint "arn:..."``), a model's data in the local store, variants that
name models. Names are unique without regard to case (their ARNs are lower-case) and found either way.

Records live under ``<home>/hosting/`` (``models/``, ``endpoint-configs/``, ``endpoints/``,
``transform-jobs/<name>/record.json``), each written whole (temp file + rename). Endpoints themselves run
in the :class:`Hosting` given (:mod:`.endpoints`); the endpoint record holds what the API adds: the ARN,
the config name, the creation time. During ``UpdateEndpoint`` the record keeps the config that serves and
the new one as ``PendingDeploymentSummary``; the new one becomes ``EndpointConfigName`` once the hosting
is InService again without a ``FailureReason`` (after a failed update the old config keeps serving, as on
SageMaker).

Transform jobs run for real, one background thread each (``run_transform_job``: sandboxed serving
containers fed by the batch data plane). What the service validates synchronously fails
``CreateTransformJob`` itself: the request's shape, a job name in use (``ResourceInUse``), an unknown model,
the data-processing settings (split, batch strategy, payload sizes, JSONPath filters), more instances than
this machine runs (``ResourceLimitExceeded``). Whatever SageMaker finds only once the job runs (model data
that is not a readable archive, an image without a local serving runtime, input that is missing) fails the
job: ``Failed`` with its ``FailureReason``. A job that was InProgress when the process running it died is
shown Failed, saying so, when a later ControlPlane reads its record.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mlops.botocore_check import service_model, service_problems
from mlops.errors import MlopsError
from mlops.local import arns
from mlops.local.s3store import S3Store, S3StoreError
from mlops.local.state.home import pid_alive

log = logging.getLogger(__name__)

JSON_11 = "application/x-amz-json-1.1"
TARGET_PREFIX = "SageMaker."
SERVICE = "sagemaker"
DEFAULT_MAX_RESULTS = 10
FAILURE_REASON_MAX = 1024  # the API's limit on FailureReason
IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
_JOB_RUNNING = ("InProgress", "Stopping")
_LIVE: set[str] = set()  # ControlPlane instances of this process that are open (see _owner_alive)


class Hosting(Protocol):
    """The runtime of hosted endpoints (:class:`.endpoints.LocalHosting`). Calls return quickly; create and
    update work in the background. A refusal is raised as an :class:`MlopsError` (its text is the message)."""

    def create_endpoint(self, name: str, config: dict, models: dict[str, dict]) -> None: ...
    def update_endpoint(self, name: str, config: dict, models: dict[str, dict]) -> None: ...
    def delete_endpoint(self, name: str) -> None: ...
    def describe_endpoint(self, name: str) -> dict | None: ...
    def list_endpoints(self) -> list[str]: ...
    def update_weights_and_capacities(self, name: str, desired: list[dict]) -> None: ...


TransformRunner = Callable[..., Any]
"""``run_transform_job(request, *, job_name, store, job_dir, model, cancel) -> JobResult``."""


class ApiError(Exception):
    """An error answer of the API: ``code`` is its ``__type``."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def _invalid(message: str) -> ApiError:
    return ApiError("ValidationException", message)


# -- the service model ------------------------------------------------------------------------------------


def _service_model():
    return service_model(SERVICE)


def validate(operation: str, request: dict) -> None:
    """Raise a ValidationException listing every problem of ``request`` under the operation's input shape."""
    problems = service_problems(SERVICE, operation, request)
    if problems:
        count = len(problems)
        raise _invalid(f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems))


def _output_members(operation: str) -> set[str] | None:
    shape = _service_model().operation_model(operation).output_shape
    return set(shape.members) if shape is not None else None


# -- records ----------------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value)


def write_json(path: Path, doc: dict) -> None:
    """``doc`` as ``path``, whole or not at all (temp file in the same dir, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, default=_json_default)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


class _Records:
    """``<dir>/<name>.json`` (or ``<dir>/<name>/record.json``); names are found without regard to case."""

    def __init__(self, directory: Path, nested: bool = False):
        self.dir, self.nested = directory, nested

    def _path(self, name: str) -> Path:
        return self.dir / name / "record.json" if self.nested else self.dir / f"{name}.json"

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        if self.nested:
            return sorted(p.name for p in self.dir.iterdir() if (p / "record.json").is_file())
        return sorted(p.stem for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def find(self, name: str) -> str | None:
        """The recorded spelling of ``name``, or None."""
        if not name or "/" in name or name.startswith("."):
            return None
        if self._path(name).is_file():
            return name
        return next((n for n in self.names() if n.lower() == name.lower()), None)

    def get(self, name: str) -> dict | None:
        found = self.find(name)
        if found is None:
            return None
        try:
            return json.loads(self._path(found).read_text())
        except FileNotFoundError:  # deleted meanwhile
            return None

    def put(self, name: str, doc: dict) -> None:
        write_json(self._path(name), doc)

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def all(self) -> list[dict]:
        return [doc for name in self.names() if (doc := self.get(name)) is not None]


# -- transform jobs ---------------------------------------------------------------------------------------


@dataclass
class _Job:
    name: str
    cancel: threading.Event
    thread: threading.Thread | None = None
    stop_requested: bool = False


def _owner_alive(owner: dict | None) -> bool:
    """Whether the ControlPlane that runs a job (``{"pid", "instance"}``) is still there."""
    if not isinstance(owner, dict):
        return False
    if owner.get("instance") in _LIVE:
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return False  # this process, but that ControlPlane was closed (or never recorded one)
    return pid_alive(pid)


# -- listing ----------------------------------------------------------------------------------------------


def _request_time(request: dict, key: str) -> datetime | None:
    from botocore.utils import parse_to_aware_datetime

    value = request.get(key)
    return None if value is None else parse_to_aware_datetime(value)


def _page(
    request: dict, items: list[dict], name_key: str, status_key: str | None = None
) -> tuple[list, str | None]:
    """Filter, sort and page summaries as the List* calls do (NameContains, Creation/LastModifiedTime
    Before/After, StatusEquals, SortBy, SortOrder, MaxResults, NextToken)."""
    if contains := request.get("NameContains"):
        items = [i for i in items if contains.lower() in i[name_key].lower()]
    for key, field_name in (("CreationTime", "CreationTime"), ("LastModifiedTime", "LastModifiedTime")):
        if (before := _request_time(request, f"{key}Before")) is not None:
            items = [i for i in items if i.get(field_name) and i[field_name] < before]
        if (after := _request_time(request, f"{key}After")) is not None:
            items = [i for i in items if i.get(field_name) and i[field_name] > after]
    if status_key and (status := request.get("StatusEquals")):
        items = [i for i in items if i.get(status_key) == status]
    sort_by = request.get("SortBy") or "CreationTime"
    keys = {
        "Name": lambda i: (i[name_key],),
        "CreationTime": lambda i: (i["CreationTime"], i[name_key]),
        "Status": lambda i: (i.get(status_key or "", ""), i[name_key]),
    }
    items = sorted(
        items,
        key=keys.get(sort_by, keys["CreationTime"]),
        reverse=(request.get("SortOrder") or "Descending") == "Descending",
    )
    offset = 0
    if token := request.get("NextToken"):
        try:
            offset = int(json.loads(base64.urlsafe_b64decode(token.encode()))["offset"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _invalid(f"Invalid pagination token {token!r}.") from None
    size = request.get("MaxResults") or DEFAULT_MAX_RESULTS
    page = items[offset : offset + size]
    more = offset + size < len(items)
    next_token = (
        base64.urlsafe_b64encode(json.dumps({"offset": offset + size}).encode()).decode() if more else None
    )
    return page, next_token


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    raise TypeError(f"{type(value).__name__} is not JSON")


# -- the API ----------------------------------------------------------------------------------------------


class ControlPlane:
    """The ``sagemaker`` API's hosting and transform calls over ``hosting`` and the local ``store``.

    ``handle(target, body)`` answers one request. ``transform_runner`` runs a transform job (default:
    :func:`mlops.local.runtime.transform.run_transform_job`); ``close()`` ends the jobs still running.
    """

    def __init__(
        self, home: Path, hosting: Hosting, store: S3Store, *, transform_runner: TransformRunner | None = None
    ):
        self.home = Path(home)
        self.root = self.home / "hosting"
        self.hosting, self.store = hosting, store
        self._runner = transform_runner
        self.models = _Records(self.root / "models")
        self.configs = _Records(self.root / "endpoint-configs")
        self.endpoints = _Records(self.root / "endpoints")
        self.jobs = _Records(self.root / "transform-jobs", nested=True)
        self._lock = threading.RLock()
        self._running: dict[str, _Job] = {}
        self._closing = False
        self._id = uuid.uuid4().hex
        _LIVE.add(self._id)
        self._operations: dict[str, Callable[[dict], dict | None]] = {
            "CreateModel": self.create_model,
            "DescribeModel": self.describe_model,
            "ListModels": self.list_models,
            "DeleteModel": self.delete_model,
            "CreateEndpointConfig": self.create_endpoint_config,
            "DescribeEndpointConfig": self.describe_endpoint_config,
            "ListEndpointConfigs": self.list_endpoint_configs,
            "DeleteEndpointConfig": self.delete_endpoint_config,
            "CreateEndpoint": self.create_endpoint,
            "DescribeEndpoint": self.describe_endpoint,
            "ListEndpoints": self.list_endpoints,
            "UpdateEndpoint": self.update_endpoint,
            "UpdateEndpointWeightsAndCapacities": self.update_endpoint_weights_and_capacities,
            "DeleteEndpoint": self.delete_endpoint,
            "CreateTransformJob": self.create_transform_job,
            "DescribeTransformJob": self.describe_transform_job,
            "ListTransformJobs": self.list_transform_jobs,
            "StopTransformJob": self.stop_transform_job,
            "SendPipelineExecutionStepSuccess": self.send_step_success,
            "SendPipelineExecutionStepFailure": self.send_step_failure,
        }

    @property
    def operations(self) -> list[str]:
        return sorted(self._operations)

    # -- the wire ---------------------------------------------------------------------------------------

    def handle(self, target: str | None, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """One JSON 1.1 request: ``(status, headers, body)`` of the answer."""
        request_id = str(uuid.uuid4())
        try:
            operation = self._operation(target)
            try:
                request = json.loads(body or b"{}")
            except (ValueError, UnicodeDecodeError) as err:
                raise ApiError("SerializationException", f"the request body is not JSON: {err}") from None
            if not isinstance(request, dict):
                raise ApiError("SerializationException", "the request body is not a JSON object")
            validate(operation, request)
            result = self._operations[operation](request) or {}
            members = _output_members(operation)
            if members is not None:
                result = {k: v for k, v in result.items() if k in members and v is not None}
            payload = json.dumps(result, default=_encode).encode()
            return 200, [("Content-Type", JSON_11), ("x-amzn-RequestId", request_id)], payload
        except ApiError as err:
            return self._error(err, request_id)
        except Exception as err:  # a bug here must still be an answer the client reads
            log.exception("SageMaker API: %s failed", target)
            return self._error(ApiError("InternalFailure", f"{type(err).__name__}: {err}", 500), request_id)

    @staticmethod
    def _error(err: ApiError, request_id: str) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = [
            ("Content-Type", JSON_11),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", err.code),
        ]
        return err.status, headers, json.dumps({"__type": err.code, "message": err.message}).encode()

    def _operation(self, target: str | None) -> str:
        if not target or not target.startswith(TARGET_PREFIX):
            raise ApiError(
                "UnknownOperationException", f"X-Amz-Target {target!r} is not a SageMaker operation"
            )
        operation = target[len(TARGET_PREFIX) :]
        if operation in self._operations:
            return operation
        if operation in _service_model().operation_names:
            raise ApiError(
                "UnknownOperationException",
                f"{operation} is not emulated by the local SageMaker API; it answers "
                f"{', '.join(self.operations)}",
            )
        raise ApiError("UnknownOperationException", f"{operation} is not an operation of the SageMaker API")

    # -- models -----------------------------------------------------------------------------------------

    def _model(self, name: str) -> dict:
        record = self.models.get(name)
        if record is None:
            raise _invalid(f'Could not find model "{name}".')
        return record

    def create_model(self, request: dict) -> dict:
        name = request["ModelName"]
        primary, containers = request.get("PrimaryContainer"), request.get("Containers")
        if (primary is None) == (containers is None):
            raise _invalid(
                "A model needs exactly one of PrimaryContainer or Containers"
                + (", not both." if primary is not None else ".")
            )
        if containers is not None and not containers:
            raise _invalid("Containers must name at least one container.")
        listed = [primary] if primary is not None else containers
        hostnames = [c["ContainerHostname"] for c in listed if c.get("ContainerHostname")]
        if len(hostnames) != len(set(hostnames)):
            raise _invalid(f"ContainerHostname values must be unique: {hostnames}.")
        for i, container in enumerate(listed):
            where = "PrimaryContainer" if primary is not None else f"Containers[{i}]"
            if not container.get("Image") and not container.get("ModelPackageName"):
                raise _invalid(f"{where} names no Image.")
            if url := container.get("ModelDataUrl"):
                self._check_model_data(url, f"{where}.ModelDataUrl")
            source = (container.get("ModelDataSource") or {}).get("S3DataSource") or {}
            if uri := source.get("S3Uri"):
                self._check_model_data(uri, f"{where}.ModelDataSource.S3DataSource.S3Uri")
        with self._lock:
            if (existing := self.models.get(name)) is not None:
                raise _invalid(f'Cannot create already existing model "{existing["ModelArn"]}".')
            arn = f"{arns.arn_prefix(request)}:model/{name.lower()}"
            self.models.put(
                name, {"ModelName": name, "ModelArn": arn, "CreationTime": _now(), "Request": request}
            )
        return {"ModelArn": arn}

    def _check_model_data(self, url: str, where: str) -> None:
        if not url.startswith("s3://"):
            raise _invalid(f"{where} {url} is not in the local S3 store: locally model data is an s3:// URI.")
        try:
            present = self.store.exists(url) or bool(self.store.list(url.rstrip("/") + "/"))
        except S3StoreError as err:
            raise _invalid(f"{where} {url} is not a usable S3 URI: {err}") from None
        if not present:
            raise _invalid(
                f"{where} {url} is neither an object nor a prefix of objects in the local S3 store "
                f"({self.store.root}): upload the model data first."
            )

    def describe_model(self, request: dict) -> dict:
        record = self._model(request["ModelName"])
        return {
            **record["Request"],
            "ModelName": record["ModelName"],
            "ModelArn": record["ModelArn"],
            "CreationTime": _time(record["CreationTime"]),
        }

    def list_models(self, request: dict) -> dict:
        items = [
            {"ModelName": r["ModelName"], "ModelArn": r["ModelArn"], "CreationTime": _time(r["CreationTime"])}
            for r in self.models.all()
        ]
        page, token = _page(request, items, "ModelName")
        return {"Models": page, "NextToken": token}

    def delete_model(self, request: dict) -> None:
        with self._lock:
            record = self._model(request["ModelName"])
            self.models.delete(record["ModelName"])

    # -- endpoint configs -------------------------------------------------------------------------------

    def _config(self, name: str) -> dict:
        record = self.configs.get(name)
        if record is None:
            raise _invalid(f'Could not find endpoint configuration "{name}".')
        return record

    def _models_of(self, config: dict) -> dict[str, dict]:
        """``{ModelName: CreateModel request}`` of every model the config's variants name."""
        out: dict[str, dict] = {}
        for variant in [
            *config.get("ProductionVariants", []),
            *(config.get("ShadowProductionVariants") or []),
        ]:
            name = variant["ModelName"]
            record = self._model(name)
            out[name] = {**record["Request"], "ModelName": record["ModelName"]}
        return out

    def create_endpoint_config(self, request: dict) -> dict:
        name = request["EndpointConfigName"]
        variants = [*request["ProductionVariants"], *(request.get("ShadowProductionVariants") or [])]
        names = [v["VariantName"] for v in variants]
        if duplicated := sorted({n for n in names if names.count(n) > 1}):
            raise _invalid(f"Variant names must be unique within an endpoint configuration: {duplicated}.")
        for variant in variants:
            if not variant.get("ModelName"):
                raise _invalid(
                    f"Variant {variant['VariantName']!r} names no ModelName (inference components "
                    "are not emulated locally)."
                )
            if not variant.get("ServerlessConfig") and not (
                variant.get("InstanceType") and variant.get("InitialInstanceCount") is not None
            ):
                raise _invalid(
                    f"Variant {variant['VariantName']!r} needs InstanceType and InitialInstanceCount, "
                    "or a ServerlessConfig."
                )
        models = self._models_of(request)
        with self._lock:
            if (existing := self.configs.get(name)) is not None:
                raise _invalid(
                    f'Cannot create already existing endpoint configuration "{existing["EndpointConfigArn"]}".'
                )
            prefix = arns.arn_prefix({"config": request, "models": models})
            arn = f"{prefix}:endpoint-config/{name.lower()}"
            self.configs.put(
                name,
                {
                    "EndpointConfigName": name,
                    "EndpointConfigArn": arn,
                    "CreationTime": _now(),
                    "Request": request,
                },
            )
        return {"EndpointConfigArn": arn}

    def describe_endpoint_config(self, request: dict) -> dict:
        record = self._config(request["EndpointConfigName"])
        return {
            **record["Request"],
            "EndpointConfigName": record["EndpointConfigName"],
            "EndpointConfigArn": record["EndpointConfigArn"],
            "CreationTime": _time(record["CreationTime"]),
        }

    def list_endpoint_configs(self, request: dict) -> dict:
        items = [
            {
                "EndpointConfigName": r["EndpointConfigName"],
                "EndpointConfigArn": r["EndpointConfigArn"],
                "CreationTime": _time(r["CreationTime"]),
            }
            for r in self.configs.all()
        ]
        page, token = _page(request, items, "EndpointConfigName")
        return {"EndpointConfigs": page, "NextToken": token}

    def delete_endpoint_config(self, request: dict) -> None:
        # as on SageMaker, an endpoint that uses the config keeps serving it
        with self._lock:
            record = self._config(request["EndpointConfigName"])
            self.configs.delete(record["EndpointConfigName"])

    # -- endpoints --------------------------------------------------------------------------------------

    def _endpoint(self, name: str) -> dict:
        record = self.endpoints.get(name)
        if record is None:
            raise _invalid(f'Could not find endpoint "{name}".')
        return record

    def _hosting_call(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except MlopsError as err:  # the hosting's own refusal, in its words
            raise _invalid(str(err)) from None

    def _state(self, record: dict) -> tuple[dict, dict]:
        """``(record, hosting's view)``; settles a pending update once the hosting is done with it."""
        name = record["EndpointName"]
        state = self.hosting.describe_endpoint(name)
        if state is None:
            state = {
                "EndpointStatus": "Failed",
                "FailureReason": f"the local hosting runtime has no endpoint {name!r} (its processes are gone): "
                "delete the endpoint and create it again",
                "LastModifiedTime": _time(record.get("LastModifiedTime") or record["CreationTime"]),
            }
        pending = record.get("PendingEndpointConfigName")
        if pending and state.get("EndpointStatus") not in IN_PROGRESS:
            with self._lock:
                record = self.endpoints.get(name) or record
                if record.get("PendingEndpointConfigName") == pending:
                    # done: the new config serves; after a failed update (a FailureReason) the old one does
                    if state.get("EndpointStatus") == "InService" and not state.get("FailureReason"):
                        record["EndpointConfigName"] = pending
                    record.pop("PendingEndpointConfigName", None)
                    record.pop("PendingSince", None)
                    self.endpoints.put(name, record)
        return record, state

    def create_endpoint(self, request: dict) -> dict:
        name = request["EndpointName"]
        with self._lock:
            if (existing := self.endpoints.get(name)) is not None:
                raise _invalid(f'Cannot create already existing endpoint "{existing["EndpointArn"]}".')
            config_record = self._config(request["EndpointConfigName"])
            config = {**config_record["Request"], "EndpointConfigName": config_record["EndpointConfigName"]}
            models = self._models_of(config)
            prefix = arns.arn_prefix({"endpoint": request, "config": config, "models": models})
            arn = f"{prefix}:endpoint/{name.lower()}"
            self._hosting_call(lambda: self.hosting.create_endpoint(name, config, models))
            created = _now()
            record = {
                "EndpointName": name,
                "EndpointArn": arn,
                "EndpointConfigName": config["EndpointConfigName"],
                "CreationTime": created,
                "LastModifiedTime": created,
            }
            for key in ("DeploymentConfig", "Tags"):
                if request.get(key) is not None:
                    record[key] = request[key]
            self.endpoints.put(name, record)
        return {"EndpointArn": arn}

    def describe_endpoint(self, request: dict) -> dict:
        record, state = self._state(self._endpoint(request["EndpointName"]))
        out = {
            "EndpointName": record["EndpointName"],
            "EndpointArn": record["EndpointArn"],
            "EndpointConfigName": record["EndpointConfigName"],
            "EndpointStatus": state.get("EndpointStatus"),
            "FailureReason": (state.get("FailureReason") or "")[:FAILURE_REASON_MAX] or None,
            "ProductionVariants": state.get("ProductionVariants"),
            "CreationTime": _time(record["CreationTime"]),
            "LastModifiedTime": _time(state.get("LastModifiedTime") or record.get("LastModifiedTime")),
            "LastDeploymentConfig": record.get("DeploymentConfig"),
        }
        if pending := record.get("PendingEndpointConfigName"):
            out["PendingDeploymentSummary"] = {
                "EndpointConfigName": pending,
                "StartTime": _time(record.get("PendingSince")),
            }
        config = (self.configs.get(record["EndpointConfigName"]) or {}).get("Request") or {}
        if capture := config.get("DataCaptureConfig"):
            enabled = capture.get("EnableCapture", True)
            out["DataCaptureConfig"] = {
                "EnableCapture": enabled,
                "CaptureStatus": "Started" if enabled else "Stopped",
                "CurrentSamplingPercentage": capture["InitialSamplingPercentage"],
                "DestinationS3Uri": capture["DestinationS3Uri"],
                "KmsKeyId": capture.get("KmsKeyId") or "",  # required in the summary; empty when unset
            }
        if config.get("AsyncInferenceConfig"):
            out["AsyncInferenceConfig"] = config["AsyncInferenceConfig"]
        return out

    def list_endpoints(self, request: dict) -> dict:
        items = []
        for record in self.endpoints.all():
            record, state = self._state(record)
            items.append(
                {
                    "EndpointName": record["EndpointName"],
                    "EndpointArn": record["EndpointArn"],
                    "CreationTime": _time(record["CreationTime"]),
                    "EndpointStatus": state.get("EndpointStatus"),
                    "LastModifiedTime": _time(
                        state.get("LastModifiedTime") or record.get("LastModifiedTime")
                    ),
                }
            )
        page, token = _page(request, items, "EndpointName", "EndpointStatus")
        return {"Endpoints": page, "NextToken": token}

    def _check_updatable(self, record: dict, state: dict) -> None:
        status = state.get("EndpointStatus")
        if status in IN_PROGRESS:
            raise _invalid(f'Cannot update in-progress endpoint "{record["EndpointArn"]}".')
        if status == "Failed":
            raise _invalid(
                f'Cannot update failed endpoint "{record["EndpointArn"]}": delete it and create it again.'
            )

    def update_endpoint(self, request: dict) -> dict:
        with self._lock:
            record, state = self._state(self._endpoint(request["EndpointName"]))
            name = record["EndpointName"]
            self._check_updatable(record, state)
            config_record = self._config(request["EndpointConfigName"])
            config = {**config_record["Request"], "EndpointConfigName": config_record["EndpointConfigName"]}
            models = self._models_of(config)
            if request.get("RetainAllVariantProperties"):
                excluded = {
                    p.get("VariantPropertyType")
                    for p in request.get("ExcludeRetainedVariantProperties") or []
                }
                old = (self.configs.get(record["EndpointConfigName"]) or {}).get("Request") or {}
                config = _retained(config, old, state, excluded)
            self._hosting_call(lambda: self.hosting.update_endpoint(name, config, models))
            now = _now()
            record.update(
                PendingEndpointConfigName=config["EndpointConfigName"], PendingSince=now, LastModifiedTime=now
            )
            if request.get("DeploymentConfig") is not None:
                record["DeploymentConfig"] = request["DeploymentConfig"]
            elif not request.get("RetainDeploymentConfig"):
                record.pop("DeploymentConfig", None)
            self.endpoints.put(name, record)
        return {"EndpointArn": record["EndpointArn"]}

    def update_endpoint_weights_and_capacities(self, request: dict) -> dict:
        desired = request["DesiredWeightsAndCapacities"]
        with self._lock:
            record, state = self._state(self._endpoint(request["EndpointName"]))
            self._check_updatable(record, state)
            present = {v.get("VariantName") for v in state.get("ProductionVariants") or []}
            if missing := [d["VariantName"] for d in desired if d["VariantName"] not in present]:
                raise _invalid(
                    f'The variant(s) "{missing}" is/are not present in the endpoint configuration '
                    f'of endpoint "{record["EndpointArn"]}".'
                )
            for d in desired:
                if d.get("DesiredWeight") is None and d.get("DesiredInstanceCount") is None:
                    raise _invalid(
                        f"Variant {d['VariantName']!r}: specify DesiredWeight or DesiredInstanceCount."
                    )
            name = record["EndpointName"]
            self._hosting_call(lambda: self.hosting.update_weights_and_capacities(name, desired))
        return {"EndpointArn": record["EndpointArn"]}

    def delete_endpoint(self, request: dict) -> None:
        with self._lock:
            record = self._endpoint(request["EndpointName"])
            name = record["EndpointName"]
            if self.hosting.describe_endpoint(name) is not None:
                self._hosting_call(lambda: self.hosting.delete_endpoint(name))
            self.endpoints.delete(name)

    # -- transform jobs ---------------------------------------------------------------------------------

    def _job(self, name: str) -> dict:
        record = self.jobs.get(name)
        if record is None:
            raise ApiError("ResourceNotFound", f"Could not find requested job with name {name}")
        running = record.get("TransformJobStatus") in _JOB_RUNNING
        if (
            running
            and record["TransformJobName"] not in self._running
            and not _owner_alive(record.get("Owner"))
        ):
            record = self._orphaned(record)
        return record

    def _orphaned(self, record: dict) -> dict:
        """A running job whose ControlPlane is gone: Failed (Stopped if it was being stopped), written back."""
        with self._lock:
            record = self.jobs.get(record["TransformJobName"]) or record
            if record.get("TransformJobStatus") not in _JOB_RUNNING:
                return record
            pid = (record.get("Owner") or {}).get("pid")
            if record["TransformJobStatus"] == "Stopping":
                record.update(TransformJobStatus="Stopped")
            else:
                record.update(
                    TransformJobStatus="Failed",
                    FailureReason=f"the local SageMaker API that ran this job (process {pid}) stopped before "
                    "the job ended; its output was not uploaded",
                )
            record.update(TransformEndTime=_now(), LastModifiedTime=_now())
            self.jobs.put(record["TransformJobName"], record)
        return record

    def _run(self) -> TransformRunner:
        if self._runner is None:
            from mlops.local.runtime.transform import run_transform_job

            self._runner = run_transform_job
        return self._runner

    def create_transform_job(self, request: dict) -> dict:
        from mlops.definition.preflight import MAX_LOCAL_HOSTS
        from mlops.local.transform import TransformError
        from mlops.local.transform.job import TransformSpec

        name = request["TransformJobName"]
        if self._closing:
            raise ApiError("ServiceUnavailable", "the local SageMaker API is shutting down", 503)
        with self._lock:
            if (existing := self.jobs.get(name)) is not None:
                raise ApiError(
                    "ResourceInUse",
                    "Job name must be unique within an AWS account and region, and a "
                    f"job with this name already exists ({existing['TransformJobArn']})",
                )
            model_record = self._model(request["ModelName"])
            model = {**model_record["Request"], "ModelName": model_record["ModelName"]}
            try:
                TransformSpec.from_request(request)
            except TransformError as err:
                raise _invalid(str(err)) from None
            count = request["TransformResources"]["InstanceCount"]
            if count > MAX_LOCAL_HOSTS:
                raise ApiError(
                    "ResourceLimitExceeded",
                    f"TransformResources.InstanceCount = {count}: more than "
                    f"the {MAX_LOCAL_HOSTS} instances that run on this machine",
                )
            arn = f"{arns.arn_prefix({'job': request, 'model': model})}:transform-job/{name.lower()}"
            now = _now()
            record = {
                "TransformJobName": name,
                "TransformJobArn": arn,
                "TransformJobStatus": "InProgress",
                "CreationTime": now,
                "LastModifiedTime": now,
                "Request": request,
                "Owner": {"pid": os.getpid(), "instance": self._id},
            }
            self.jobs.put(name, record)
            job = _Job(name, threading.Event())
            job.thread = threading.Thread(
                target=self._run_job, args=(job, request, model), name=f"transform-{name}", daemon=True
            )
            self._running[name] = job
            job.thread.start()
        return {"TransformJobArn": arn}

    def _run_job(self, job: _Job, request: dict, model: dict) -> None:
        name = job.name
        self._update_job(name, TransformStartTime=_now())
        runner_request = {k: v for k, v in request.items() if k != "TransformJobName"}
        try:
            result = self._run()(
                runner_request,
                job_name=name,
                store=self.store,
                job_dir=self.jobs.dir / name / "job",
                model=model,
                cancel=job.cancel,
            )
            status, reason = result.status, result.failure_reason
        except MlopsError as err:  # found once the job ran (its model data, image, input): the job fails
            status, reason = "Failed", f"ClientError: {err}"
        except Exception as err:
            log.exception("transform job %s", name)
            status, reason = "Failed", f"InternalServerError: {type(err).__name__}: {err}"
        if status == "Stopped" and not job.stop_requested:
            status, reason = (
                "Failed",
                "the local SageMaker API shut down while the job ran; its output was not uploaded",
            )
        elif status == "Stopped":
            reason = None
        now = _now()
        with self._lock:
            self._update_job(
                name,
                TransformJobStatus=status,
                FailureReason=reason,
                TransformEndTime=now,
                LastModifiedTime=now,
            )
            self._running.pop(name, None)
        log.info("transform job %s: %s%s", name, status, f" ({reason})" if reason else "")

    def _update_job(self, name: str, **changes: Any) -> None:
        with self._lock:
            record = self.jobs.get(name)
            if record is not None:
                record.update(changes)
                self.jobs.put(name, {k: v for k, v in record.items() if v is not None})

    def _job_view(self, record: dict) -> dict:
        reason = record.get("FailureReason")
        return {
            **record["Request"],
            "TransformJobName": record["TransformJobName"],
            "TransformJobArn": record["TransformJobArn"],
            "TransformJobStatus": record["TransformJobStatus"],
            "FailureReason": reason[:FAILURE_REASON_MAX] if reason else None,
            "CreationTime": _time(record["CreationTime"]),
            "TransformStartTime": _time(record.get("TransformStartTime")),
            "TransformEndTime": _time(record.get("TransformEndTime")),
            "LastModifiedTime": _time(record.get("LastModifiedTime")),
        }

    def describe_transform_job(self, request: dict) -> dict:
        return self._job_view(self._job(request["TransformJobName"]))

    def list_transform_jobs(self, request: dict) -> dict:
        keys = (
            "TransformJobName",
            "TransformJobArn",
            "CreationTime",
            "TransformEndTime",
            "LastModifiedTime",
            "TransformJobStatus",
            "FailureReason",
        )
        items = []
        for name in self.jobs.names():
            with contextlib.suppress(ApiError):
                view = self._job_view(self._job(name))
                items.append({k: view[k] for k in keys if view.get(k) is not None})
        page, token = _page(request, items, "TransformJobName", "TransformJobStatus")
        return {"TransformJobSummaries": page, "NextToken": token}

    def stop_transform_job(self, request: dict) -> None:
        with self._lock:
            record = self._job(request["TransformJobName"])
            name, status = record["TransformJobName"], record["TransformJobStatus"]
            if status == "Stopping":
                return
            if status != "InProgress":
                raise _invalid(f'Transform job "{name}" is {status}: only an InProgress job can be stopped.')
            job = self._running.get(name)
            if job is None:
                raise _invalid(
                    f'Transform job "{name}" runs in another process (its local SageMaker API): stop it there.'
                )
            job.stop_requested = True
            job.cancel.set()
            self._update_job(name, TransformJobStatus="Stopping", LastModifiedTime=_now())

    # -- callback steps ---------------------------------------------------------------------------------

    def _callbacks(self):
        from mlops.local.handlers.callback import Callbacks
        from mlops.local.state.home import Home

        return Callbacks(Home.open(self.home))

    def send_step_success(self, request: dict) -> dict:
        """A local Callback step's token answered, as SageMaker completes a waiting pipeline step."""
        from mlops.local.handlers.callback import CallbackError

        outputs = {p["Name"]: p["Value"] for p in request.get("OutputParameters") or []}
        try:
            row = self._callbacks().succeed(request["CallbackToken"], outputs)
        except CallbackError as err:
            raise _invalid(str(err)) from None
        return {"PipelineExecutionArn": row["message"]["pipelineExecutionArn"]}

    def send_step_failure(self, request: dict) -> dict:
        from mlops.local.handlers.callback import CallbackError

        try:
            row = self._callbacks().fail(request["CallbackToken"], request.get("FailureReason") or "")
        except CallbackError as err:
            raise _invalid(str(err)) from None
        return {"PipelineExecutionArn": row["message"]["pipelineExecutionArn"]}

    # -- lifecycle --------------------------------------------------------------------------------------

    def running_jobs(self) -> list[str]:
        with self._lock:
            return sorted(self._running)

    def close(self, *, wait: bool = False, timeout: float = 60.0) -> None:
        """End this API's transform jobs: cancel them (shown Failed, saying why), or with ``wait`` let them
        finish; either way wait up to ``timeout`` seconds for them. New jobs are refused from now on."""
        self._closing = True
        with self._lock:
            jobs = list(self._running.values())
        if not wait:
            for job in jobs:
                job.cancel.set()
        for job in jobs:
            if job.thread is not None:
                job.thread.join(timeout)
        _LIVE.discard(self._id)

    def __enter__(self) -> ControlPlane:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _retained(new: dict, old: dict, state: dict, excluded: Iterable[str]) -> dict:
    """UpdateEndpoint's RetainAllVariantProperties: the current weights, instance counts and data capture of
    variants the new config shares by name, except the property types in ``excluded``."""
    excluded = set(excluded)
    current = {v.get("VariantName"): v for v in state.get("ProductionVariants") or []}
    variants = []
    for variant in new.get("ProductionVariants", []):
        variant = dict(variant)
        now = current.get(variant["VariantName"])
        if now is not None:
            if "DesiredWeight" not in excluded and now.get("DesiredWeight") is not None:
                variant["InitialVariantWeight"] = now["DesiredWeight"]
            if "DesiredInstanceCount" not in excluded and now.get("DesiredInstanceCount") is not None:
                variant["InitialInstanceCount"] = now["DesiredInstanceCount"]
        variants.append(variant)
    out = {**new, "ProductionVariants": variants}
    if "DataCaptureConfig" not in excluded:
        if old.get("DataCaptureConfig") is not None:
            out["DataCaptureConfig"] = old["DataCaptureConfig"]
        else:
            out.pop("DataCaptureConfig", None)
    return out
