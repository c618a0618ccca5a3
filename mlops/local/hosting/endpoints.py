"""Hosted endpoints: what CreateEndpoint makes of an endpoint config and its models, on this machine.

An endpoint is its config's production variants; a variant is ``InitialInstanceCount`` instances of its
model, each instance the model's serving containers (:mod:`.containers`: sandboxed, the image's own serving
runtime, reached through a Unix socket). How a request is routed follows SageMaker:

- **variant**: ``TargetVariant`` when the request names one, else drawn at random by the variants' weights
  (A/B testing); the answer names it in ``x-Amzn-Invoked-Production-Variant``;
- **instance**: round robin over the variant's instances in service;
- **model**: one container; an inference pipeline (``Containers`` with ``InferenceExecutionConfig`` Serial,
  the default: each container's answer is the next one's request, its ``Content-Type`` with it; the
  client's ``Accept`` goes to the last container, the others use their own default); Direct
  (``TargetContainerHostname`` picks one container); or multi-model (``Mode: MultiModel``: ``TargetModel``
  is a key under the container's ``ModelDataUrl`` prefix, loaded on the instance at its first call and
  unloaded least-recently-used when the instance's models pass its memory budget).

Each loaded model of a multi-model instance is a serving container of its own, so its memory is measured
(resident set of its processes) and given back whole when it is unloaded; SageMaker loads them into one
container, which only the container's own server could measure.

The endpoints live in the process that serves the API (``mlops endpoints api``), recorded under
``<home>/hosting/runtime/<name>/state.json``; a later API process stops what an earlier one left running and
brings its endpoints back up from their configs, as SageMaker keeps endpoints through a restart of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
import random
import shutil
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError
from mlops.local.hosting import containers
from mlops.local.hosting.containers import ContainerError, ContainerRef
from mlops.local.runtime import serving
from mlops.local.runtime.common import JobRequestError
from mlops.local.runtime.instances import limits_for, machine_memory
from mlops.local.s3store import S3Store
from mlops.serving import http_connection
from mlops.serving.runtime_api import ContainerAnswer, Refused, container_headers
from mlops.serving.supervisor import ProcessRef

log = logging.getLogger(__name__)

CREATING, IN_SERVICE, UPDATING, FAILED, DELETING = "Creating", "InService", "Updating", "Failed", "Deleting"
SINGLE, SERIAL, DIRECT, MULTI_MODEL = "SingleModel", "Serial", "Direct", "MultiModel"
INVOKE_TIMEOUT_S = 60.0  # InvokeEndpoint's limit on a container's answer
REALTIME_PAYLOAD_MB = 6
ASYNC_PAYLOAD_MB = 1024  # InvokeEndpointAsync's payloads go up to 1 GB
METRIC_WINDOW_S = 3600.0  # how much invocation history an endpoint keeps for its metrics


class HostingError(MlopsError, Refused):
    """A request the API refuses (``ValidationError``); the message is the API's."""


class NotHosted(HostingError):
    """No hosted endpoint of that name here (it may be one the supervisor runs)."""


@dataclass(frozen=True)
class HostedInfo:
    """What the async queue and data capture need of an endpoint (as the supervisor's EndpointInfo has)."""

    name: str
    async_config: dict | None
    data_capture: dict | None


@dataclass
class Answer:
    content_type: str
    body: bytes
    variant: str
    headers: dict[str, str] = field(default_factory=dict)


# ---- metrics -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Call:
    at: float  # time.time()
    latency_us: float
    error: int | None  # the container's status when it was an error
    cache_hit: bool | None  # multi-model: whether the target model was loaded already
    load_ms: float | None


class Metrics:
    """Each invocation of each variant, for the figures CloudWatch keeps in ``AWS/SageMaker`` (the
    autoscaling policies read them): ``Invocations``, ``InvocationsPerInstance``, ``ModelLatency`` (µs),
    ``Invocation4XXErrors``/``5XX``, and for multi-model ``ModelCacheHit``, ``ModelLoadingWaitTime`` (µs)."""

    def __init__(self) -> None:
        self._calls: dict[tuple[str, str], deque[_Call]] = {}
        self._lock = threading.Lock()

    def record(self, endpoint: str, variant: str, call: _Call) -> None:
        with self._lock:
            calls = self._calls.setdefault((endpoint, variant), deque())
            calls.append(call)
            while calls and calls[0].at < call.at - METRIC_WINDOW_S:
                calls.popleft()

    def calls(self, endpoint: str, variant: str, start: float, end: float) -> list[_Call]:
        with self._lock:
            return [c for c in self._calls.get((endpoint, variant), ()) if start <= c.at < end]

    def forget(self, endpoint: str) -> None:
        with self._lock:
            for key in [k for k in self._calls if k[0] == endpoint]:
                del self._calls[key]


def _statistic(values: list[float], statistic: str, count_only: bool = False) -> float | None:
    if statistic == "SampleCount" or count_only and statistic == "Sum":
        return float(len(values))
    if not values:
        return 0.0 if statistic == "Sum" else None
    return {
        "Sum": sum(values),
        "Average": sum(values) / len(values),
        "Minimum": min(values),
        "Maximum": max(values),
    }.get(statistic, sum(values) / len(values))


# ---- the endpoint's parts ----------------------------------------------------------------------------------


@dataclass
class _Loaded:
    """One model of a multi-model instance: loading (``ready`` unset), then serving from ``ref``."""

    ready: threading.Event = field(default_factory=threading.Event)
    ref: ContainerRef | None = None
    error: str | None = None
    memory: int = 0
    inflight: int = 0
    loaded_at: float = 0.0


@dataclass
class _Instance:
    id: str
    containers: list[ContainerRef]
    models: OrderedDict[str, _Loaded] = field(default_factory=OrderedDict)  # multi-model, LRU first
    inflight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Variant:
    name: str
    model_name: str
    model: dict
    kind: str
    weight: float
    instance_type: str | None
    directory: Path
    desired_count: int
    served: list[serving.ServingContainer]  # one per container (none for multi-model: one per target model)
    hostnames: list[str]
    payload_mb: int = REALTIME_PAYLOAD_MB
    instances: list[_Instance] = field(default_factory=list)
    desired_weight: float | None = None
    turn: itertools.count = field(default_factory=itertools.count)
    numbering: itertools.count = field(default_factory=lambda: itertools.count(1))
    scale_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Endpoint:
    name: str
    status: str
    config: dict
    models: dict[str, dict]
    created: datetime
    modified: datetime
    directory: Path
    variants: dict[str, _Variant] = field(default_factory=dict)
    failure_reason: str | None = None
    generation: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


def _now() -> datetime:
    return datetime.now(UTC)


def _containers_of(model: dict) -> list[dict]:
    if model.get("PrimaryContainer"):
        return [model["PrimaryContainer"]]
    return list(model.get("Containers") or [])


def model_kind(model: dict) -> str:
    """How requests reach ``model``'s containers: SingleModel, MultiModel, Serial or Direct."""
    containers_ = _containers_of(model)
    if len(containers_) == 1:
        return MULTI_MODEL if containers_[0].get("Mode") == MULTI_MODEL else SINGLE
    mode = (model.get("InferenceExecutionConfig") or {}).get("Mode") or SERIAL
    if mode not in (SERIAL, DIRECT):
        raise HostingError(f"model {model.get('ModelName')!r}: InferenceExecutionConfig.Mode {mode!r}")
    return mode


def _hostnames(containers_: list[dict]) -> list[str]:
    return [c.get("ContainerHostname") or f"Container{i}" for i, c in enumerate(containers_, 1)]


def _post(ref: ContainerRef, body: bytes, headers: dict[str, str]) -> tuple[int, str, bytes]:
    conn = http_connection(ref.socket, INVOKE_TIMEOUT_S)
    try:
        conn.request("POST", "/invocations", body=body, headers=headers)
        response = conn.getresponse()
        return (
            response.status,
            response.getheader("Content-Type") or "application/octet-stream",
            response.read(),
        )
    finally:
        conn.close()


# ---- the records, read from outside the API process ----------------------------------------------------------


def recorded_endpoints(home: str | os.PathLike) -> list[dict]:
    """The endpoints CreateEndpoint made under ``home``, as their records say, for ``mlops endpoints list``:
    name, status, the variants' model, weight and instance count, and how many containers are running.
    The status is the API process's, so an endpoint with no running container is shown ``Stopped`` (the
    next ``mlops endpoints api`` brings it back)."""
    out = []
    for path in sorted((Path(home) / "hosting" / "runtime").glob("*/state.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        running = 0
        for ref in doc.get("containers", []):
            with contextlib.suppress(TypeError, KeyError):
                running += ProcessRef(**ref["process"]).alive()
        desired = doc.get("desired") or {}
        variants = [
            {"VariantName": pv.get("VariantName", "AllTraffic"), "ModelName": pv.get("ModelName"),
             "Weight": (desired.get(pv.get("VariantName")) or [pv.get("InitialVariantWeight", 1.0)])[0],
             "InstanceCount": (desired.get(pv.get("VariantName")) or [None, pv.get("InitialInstanceCount", 1)])[1]}
            for pv in (doc.get("config") or {}).get("ProductionVariants") or []
        ]  # fmt: skip
        status = doc.get("status", "")
        if status in (IN_SERVICE, UPDATING, CREATING) and not running:
            status = "Stopped"
        out.append({"name": doc.get("name", path.parent.name), "status": status, "variants": variants,
                    "running_containers": running, "failure_reason": doc.get("failure_reason"),
                    "created": doc.get("created")})  # fmt: skip
    return out


# ---- the hosting ------------------------------------------------------------------------------------------


class LocalHosting:
    """Hosted endpoints on this machine; the ``Hosting`` the control plane drives and the router the
    runtime API invokes. ``mme_memory_mb``: each multi-model instance's memory for loaded models (default:
    its instance type's memory, at most this machine's)."""

    def __init__(
        self,
        home: str | os.PathLike,
        store: S3Store | None = None,
        *,
        images: Mapping[str, Any] | None = None,
        services: Any = None,
        mme_memory_mb: int | None = None,
        restore: bool = True,
    ):
        self.home = Path(home)
        self.root = self.home / "hosting" / "runtime"
        self.store = store or S3Store(self.home / "s3")
        self.images, self.services = dict(images or {}), services
        self.mme_memory = mme_memory_mb * 2**20 if mme_memory_mb else None
        self.metrics = Metrics()
        # the async queue's count of an endpoint's requests queued or running (ApproximateBacklogSize)
        self.backlog: Callable[[str], int] = lambda _name: 0
        self._endpoints: dict[str, _Endpoint] = {}
        self._lock = threading.Lock()
        self._work = ThreadPoolExecutor(max_workers=4, thread_name_prefix="hosting")
        if restore:
            self._restore()

    # -- the Hosting protocol (the control plane's calls) ------------------------------------------------

    def create_endpoint(self, name: str, config: dict, models: dict[str, dict]) -> None:
        with self._lock:
            if name in self._endpoints:
                raise HostingError(f'Cannot create already existing endpoint "{name}".')
            now = _now()
            directory = self.root / name
            shutil.rmtree(directory, ignore_errors=True)
            directory.mkdir(parents=True)
            ep = _Endpoint(name, CREATING, config, models, now, now, directory)
            self._endpoints[name] = ep
        self._save(ep)
        self._work.submit(self._bring_up, ep)

    def update_endpoint(self, name: str, config: dict, models: dict[str, dict]) -> None:
        ep = self._get(name)
        with ep.lock:
            if ep.status != IN_SERVICE:
                raise HostingError(f'Cannot update endpoint "{name}": it is {ep.status}, not InService.')
            ep.status, ep.modified = UPDATING, _now()
        self._save(ep)
        self._work.submit(self._update, ep, config, models)

    def delete_endpoint(self, name: str) -> None:
        ep = self._get(name)
        with ep.lock:
            ep.status = DELETING
            variants, ep.variants = list(ep.variants.values()), {}
        for variant in variants:
            self._stop_variant(variant)
        with self._lock:
            self._endpoints.pop(name, None)
        self.metrics.forget(name)
        shutil.rmtree(ep.directory, ignore_errors=True)

    def describe_endpoint(self, name: str) -> dict | None:
        ep = self._endpoints.get(name)
        if ep is None:
            return None
        variants = []
        for v in ep.variants.values():
            summary = {
                "VariantName": v.name,
                "CurrentWeight": v.weight,
                "DesiredWeight": v.desired_weight if v.desired_weight is not None else v.weight,
                "CurrentInstanceCount": len(v.instances),
                "DesiredInstanceCount": v.desired_count,
                "DeployedImages": [
                    {"SpecifiedImage": c.get("Image", ""), "ResolvedImage": c.get("Image", ""),
                     "ResolutionTime": ep.created}
                    for c in _containers_of(v.model)
                ],
            }  # fmt: skip
            variants.append(summary)
        doc = {
            "EndpointStatus": ep.status,
            "ProductionVariants": variants,
            "CreationTime": ep.created,
            "LastModifiedTime": ep.modified,
        }
        if ep.failure_reason:
            doc["FailureReason"] = ep.failure_reason
        return doc

    def list_endpoints(self) -> list[str]:
        return sorted(self._endpoints)

    def update_weights_and_capacities(self, name: str, desired: list[dict]) -> None:
        ep = self._get(name)
        with ep.lock:
            if ep.status != IN_SERVICE:
                raise HostingError(f'Cannot update endpoint "{name}": it is {ep.status}, not InService.')
            for d in desired:
                if d.get("VariantName") not in ep.variants:
                    raise HostingError(
                        f'The variant "{d.get("VariantName")}" is not present in endpoint "{name}".'
                    )
            ep.status, ep.modified = UPDATING, _now()
            for d in desired:
                if d.get("DesiredWeight") is not None:
                    ep.variants[d["VariantName"]].weight = float(d["DesiredWeight"])
        self._save(ep)

        def apply() -> None:
            try:
                for d in desired:
                    if d.get("DesiredInstanceCount") is not None:
                        self.set(
                            name,
                            d["VariantName"],
                            int(d["DesiredInstanceCount"]),
                            "UpdateEndpointWeightsAndCapacities",
                        )
            except (HostingError, ContainerError, JobRequestError) as err:
                ep.failure_reason = str(err)
            finally:
                ep.status, ep.modified = IN_SERVICE, _now()
                self._save(ep)

        self._work.submit(apply)

    # -- autoscaling's view: a variant's instance count ---------------------------------------------------

    def current(self, endpoint: str, variant: str) -> int | None:
        ep = self._endpoints.get(endpoint)
        v = ep.variants.get(variant) if ep else None
        return v.desired_count if v else None

    def set(self, endpoint: str, variant: str, count: int, reason: str = "") -> None:
        """Scale ``variant`` to ``count`` instances: new ones start (and serve once ready), extra ones stop
        taking requests, finish those in flight and stop."""
        ep = self._get(endpoint)
        v = ep.variants.get(variant)
        if v is None:
            raise HostingError(f'The variant "{variant}" is not present in endpoint "{endpoint}".')
        if count < 0:
            raise HostingError(f"instance count {count} for variant {variant!r} must be >= 0")
        with v.scale_lock:
            v.desired_count = count
            log.info("endpoint %s variant %s: %d -> %d instance(s) (%s)", endpoint, variant, len(v.instances),
                     count, reason or "set")  # fmt: skip
            while len(v.instances) < count:
                instance = self._start_instance(ep, v)
                v.instances = [*v.instances, instance]
                self._save(ep)
            while len(v.instances) > count:
                gone, v.instances = v.instances[-1], v.instances[:-1]
                self._save(ep)
                self._stop_instance(gone, drain=True)
            ep.modified = _now()
        self._save(ep)

    def metric(
        self, endpoint: str, variant: str, name: str, statistic: str, start: datetime, end: datetime
    ) -> float | None:
        """One ``AWS/SageMaker`` metric of a variant over ``[start, end)``, as CloudWatch would give it."""
        ep = self._endpoints.get(endpoint)
        v = ep.variants.get(variant) if ep else None
        if v is None:
            return None
        if name in (
            "ApproximateBacklogSize",
            "ApproximateBacklogSizePerInstance",
            "HasBacklogWithoutCapacity",
        ):
            backlog, instances = self.backlog(endpoint), sum(len(x.instances) for x in ep.variants.values())
            if name == "ApproximateBacklogSize":
                return float(backlog)
            if name == "HasBacklogWithoutCapacity":
                return 1.0 if backlog and not instances else 0.0
            return backlog / max(1, instances)
        calls = self.metrics.calls(endpoint, variant, start.timestamp(), end.timestamp())
        if name == "Invocations":
            return _statistic([1.0] * len(calls), statistic, count_only=True)
        if name == "InvocationsPerInstance":
            total = _statistic([1.0] * len(calls), "Sum", count_only=True) or 0.0
            return total / max(1, len(v.instances))
        if name == "ModelLatency":
            return _statistic([c.latency_us for c in calls], statistic)
        if name in ("Invocation4XXErrors", "Invocation5XXErrors"):
            low = 400 if name.startswith("Invocation4") else 500
            return float(sum(1 for c in calls if c.error is not None and low <= c.error < low + 100))
        if name == "ModelCacheHit":
            return _statistic([float(c.cache_hit) for c in calls if c.cache_hit is not None], statistic)
        if name == "ModelLoadingWaitTime":
            return _statistic([c.load_ms * 1000 for c in calls if c.load_ms is not None], statistic)
        return None

    # -- the router ---------------------------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self._endpoints

    def info(self, name: str) -> HostedInfo:
        config = self._get(name).config
        capture = config.get("DataCaptureConfig")
        if capture is not None and capture.get("EnableCapture") is False:
            capture = None
        return HostedInfo(name, config.get("AsyncInferenceConfig"), capture)

    def invoke_file(
        self, name: str, source: Path, headers: dict[str, str], out, timeout: float = 3600.0
    ) -> str:
        """An asynchronous request: ``source`` streamed to one instance (waiting for one while the variants
        have none: scaled to zero, the backlog brings one up), the answer copied to the file ``out``; its
        content type. Models other than one container take the payload in memory."""
        ep = self._get(name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                variant = self._pick_variant(ep, headers.get("X-Amzn-SageMaker-Target-Variant"))
                break
            except HostingError:
                if time.monotonic() > deadline or ep.status in (FAILED, DELETING):
                    raise
                time.sleep(0.1)
        if variant.kind != SINGLE:
            answer = self.invoke(name, source.read_bytes(), headers)
            out.write(answer.body)
            return answer.content_type
        instance = self._pick_instance(variant, None)
        started, error = time.perf_counter(), None
        instance.inflight += 1
        conn = http_connection(instance.containers[0].socket, timeout)
        try:
            with open(source, "rb") as body:
                conn.request(
                    "POST",
                    "/invocations",
                    body=body,
                    headers={**headers, "Content-Length": str(source.stat().st_size)},
                )
            response = conn.getresponse()
            if response.status >= 400:
                error = response.status
                raise ContainerAnswer(response.status, response.read(4096), variant.hostnames[0])
            shutil.copyfileobj(response, out, 1 << 20)
            return response.getheader("Content-Type") or "application/octet-stream"
        finally:
            conn.close()
            instance.inflight -= 1
            self.metrics.record(
                name,
                variant.name,
                _Call(time.time(), (time.perf_counter() - started) * 1e6, error, None, None),
            )

    def invoke(self, name: str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """One InvokeEndpoint; raises :class:`HostingError` for what the API refuses, :class:`ContainerAnswer`
        for a container's error status, ``OSError`` when a container cannot be reached."""
        ep = self._serving(name)
        variant = self._pick_variant(ep, headers.get("X-Amzn-SageMaker-Target-Variant"))
        instance = self._pick_instance(variant, headers.get("X-Amzn-SageMaker-Target-Model"))
        out = container_headers(headers)
        started = time.perf_counter()
        hit = load_ms = None
        error: int | None = None
        instance.inflight += 1
        try:
            if variant.kind == MULTI_MODEL:
                answer, hit, load_ms = self._invoke_multi_model(variant, instance, body, out, headers)
            elif variant.kind == DIRECT:
                answer = self._invoke_direct(variant, instance, body, out, headers)
            elif variant.kind == SERIAL:
                answer = self._invoke_serial(variant, instance, body, out)
            else:
                answer = self._answer(instance.containers[0], body, out, variant.hostnames[0])
        except ContainerAnswer as err:
            error = err.status
            raise
        finally:
            instance.inflight -= 1
            self.metrics.record(
                name, variant.name,
                _Call(time.time(), (time.perf_counter() - started) * 1e6, error, hit, load_ms),
            )  # fmt: skip
        answer.variant = variant.name
        if hit is not None:
            answer.headers["X-Mlops-Model-Cache"] = "hit" if hit else f"miss; loaded in {load_ms:.0f} ms"
        return answer

    def open_stream(self, name: str, body: bytes, headers: Mapping[str, str]):
        """InvokeEndpointWithResponseStream on a one-container model: ``(variant, connection, response)``
        with the container's answer still arriving (the caller reads it as it comes, then closes the
        connection); None for the other kinds of model, which answer whole through :meth:`invoke`."""
        ep = self._serving(name)
        variant = self._pick_variant(ep, headers.get("X-Amzn-SageMaker-Target-Variant"))
        if variant.kind != SINGLE:
            return None
        instance = self._pick_instance(variant, None)
        out = container_headers(headers)
        conn = http_connection(instance.containers[0].socket, INVOKE_TIMEOUT_S)
        try:
            conn.request("POST", "/invocations", body=body, headers=out)
            response = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        self.metrics.record(
            name,
            variant.name,
            _Call(time.time(), 0.0, response.status if response.status >= 400 else None, None, None),
        )
        return variant.name, conn, response

    def _serving(self, name: str) -> _Endpoint:
        """The endpoint ``name`` if it takes requests now (an update keeps serving the old variants)."""
        ep = self._endpoints.get(name)
        if ep is None:
            raise NotHosted(f"Endpoint {name} not found.")
        if ep.status not in (IN_SERVICE, UPDATING):
            raise HostingError(f"Endpoint {name} is {ep.status}: no instance serves it.")
        return ep

    def _pick_variant(self, ep: _Endpoint, target: str | None) -> _Variant:
        variants = list(ep.variants.values())
        if target:
            for v in variants:
                if v.name == target:
                    if not v.instances:
                        raise HostingError(
                            f'The variant "{target}" of endpoint "{ep.name}" has no instances.'
                        )
                    return v
            raise HostingError(f'The variant "{target}" is not present in endpoint "{ep.name}".')
        serving_ = [v for v in variants if v.instances and v.weight > 0]
        if not serving_:
            raise HostingError(f"Endpoint {ep.name} has no variant with a weight above 0 and an instance.")
        return random.choices(serving_, weights=[v.weight for v in serving_])[0]

    def _pick_instance(self, variant: _Variant, target_model: str | None) -> _Instance:
        instances = variant.instances
        if not instances:
            raise HostingError(f"variant {variant.name} has no instance in service")
        if target_model and variant.kind == MULTI_MODEL:  # where the model is loaded already, if anywhere
            holding = [i for i in instances if target_model in i.models]
            if holding:
                return min(holding, key=lambda i: i.inflight)
        return instances[next(variant.turn) % len(instances)]

    @staticmethod
    def _answer(ref: ContainerRef, body: bytes, headers: dict[str, str], hostname: str) -> Answer:
        status, content_type, payload = _post(ref, body, headers)
        if status >= 400:
            raise ContainerAnswer(status, payload, hostname)
        return Answer(content_type, payload, "")

    def _invoke_serial(self, variant: _Variant, instance: _Instance, body: bytes, headers: dict) -> Answer:
        accept = headers.pop("Accept", None)
        answer = None
        for i, (ref, hostname) in enumerate(zip(instance.containers, variant.hostnames, strict=True)):
            last = i == len(instance.containers) - 1
            request = {**headers, **({"Accept": accept} if last and accept else {})}
            answer = self._answer(ref, body, request, hostname)
            body, headers = answer.body, {"Content-Type": answer.content_type}
        return answer

    def _invoke_direct(
        self, variant: _Variant, instance: _Instance, body: bytes, headers: dict, request
    ) -> Answer:
        target = request.get("X-Amzn-SageMaker-Target-Container-Hostname")
        if not target:
            raise HostingError(
                f"Endpoint's model {variant.model_name} invokes its containers directly: "
                f"give TargetContainerHostname (one of {', '.join(variant.hostnames)})."
            )
        if target not in variant.hostnames:
            raise HostingError(
                f"TargetContainerHostname {target!r} is not a container of model {variant.model_name} "
                f"({', '.join(variant.hostnames)})."
            )
        i = variant.hostnames.index(target)
        return self._answer(instance.containers[i], body, headers, target)

    # -- multi-model ----------------------------------------------------------------------------------------

    def _model_uri(self, variant: _Variant, target: str) -> str:
        prefix = _containers_of(variant.model)[0].get("ModelDataUrl") or ""
        if not target or target.startswith("/") or ".." in target.split("/"):
            raise HostingError(f"TargetModel {target!r} is not a key under {prefix}")
        return f"{prefix.rstrip('/')}/{target}"

    def _invoke_multi_model(
        self, variant: _Variant, instance: _Instance, body: bytes, headers: dict, request
    ) -> tuple[Answer, bool, float | None]:
        target = request.get("X-Amzn-SageMaker-Target-Model")
        if not target:
            raise HostingError(f"Endpoint's model {variant.model_name} is multi-model: give TargetModel.")
        uri = self._model_uri(variant, target)
        with instance.lock:
            loaded = instance.models.get(target)
            hit = loaded is not None and loaded.ready.is_set() and loaded.ref is not None
            if loaded is None:
                if not self.store.path(uri).is_file():
                    raise HostingError(
                        f"Failed to download model data (TargetModel {target}: no object at {uri})."
                    )
                loaded = instance.models[target] = _Loaded()
                loader = True
            else:
                loader = False
            instance.models.move_to_end(target)
            loaded.inflight += 1
        try:
            load_ms = None
            if loader:
                t0 = time.perf_counter()
                self._load_model(variant, instance, target, uri, loaded)
                load_ms = (time.perf_counter() - t0) * 1000
            else:
                loaded.ready.wait(containers.READY_TIMEOUT_S)
            if loaded.error or loaded.ref is None:
                raise ContainerAnswer(
                    500, f"model {target} could not be loaded: {loaded.error}".encode(), target
                )
            return self._answer(loaded.ref, body, headers, target), hit, load_ms
        finally:
            with instance.lock:
                loaded.inflight -= 1

    def _budget(self, variant: _Variant) -> int:
        if self.mme_memory:
            return self.mme_memory
        limits = limits_for(variant.instance_type)
        return limits.memory if limits else machine_memory()

    def _load_model(
        self, variant: _Variant, instance: _Instance, target: str, uri: str, loaded: _Loaded
    ) -> None:
        """Unpack and start ``target`` on ``instance`` after unloading what must go to fit it."""
        try:
            estimate = max((m.memory for m in instance.models.values()), default=0)
            self._evict(variant, instance, keep=target, room=estimate)
            key = hashlib.sha256(target.encode()).hexdigest()[:16]
            directory = variant.directory / "models" / instance.id / key
            shutil.rmtree(directory, ignore_errors=True)
            model_dir = directory / "model"
            model_dir.mkdir(parents=True)
            serving.unpack_model(self.store, uri, model_dir)
            container = {**_containers_of(variant.model)[0], "ModelDataUrl": uri}
            served = self._prepare(container, model_dir, variant, directory)
            ref = containers.start(directory, "container", target, served)
            loaded.ref = ref
            containers.wait_ready(ref, f"model {target} on {instance.id} of variant {variant.name}")
            loaded.memory = containers.memory_bytes(ref)
            loaded.loaded_at = time.time()
            log.info(
                "variant %s %s: loaded %s (%.0f MB)", variant.name, instance.id, target, loaded.memory / 2**20
            )
            self._evict(variant, instance, keep=target, room=0)
        except (ContainerError, JobRequestError, OSError) as err:
            loaded.error = str(err)
            with instance.lock:
                if instance.models.get(target) is loaded:
                    del instance.models[target]
            if loaded.ref is not None:
                containers.stop(loaded.ref)
                loaded.ref = None
        finally:
            loaded.ready.set()

    def _evict(self, variant: _Variant, instance: _Instance, *, keep: str, room: int) -> None:
        """Unload least-recently-used models until the loaded ones and ``room`` fit the budget."""
        budget = self._budget(variant)
        while True:
            with instance.lock:
                used = sum(m.memory for m in instance.models.values())
                if used + room <= budget:
                    return
                victim = next(
                    (
                        k
                        for k, m in instance.models.items()
                        if k != keep and m.inflight == 0 and m.ready.is_set()
                    ),
                    None,
                )
                if victim is None:
                    return
                gone = instance.models.pop(victim)
            log.info("variant %s %s: unloading %s (%.0f MB) to fit the %.0f MB budget", variant.name, instance.id,
                     victim, gone.memory / 2**20, budget / 2**20)  # fmt: skip
            if gone.ref is not None:
                containers.stop(gone.ref)

    def loaded_models(self, name: str) -> dict[str, dict[str, list[str]]]:
        """Per variant and instance, the multi-model targets loaded now, least recently used first."""
        ep = self._get(name)
        return {
            v.name: {
                i.id: [k for k, m in i.models.items() if m.ready.is_set() and m.ref] for i in v.instances
            }
            for v in ep.variants.values()
        }

    # -- bringing variants up and down ---------------------------------------------------------------------

    def _prepare(
        self, container: dict, model_dir: Path, variant: _Variant | None, directory: Path, instance_type=None
    ) -> serving.ServingContainer:
        return serving.prepare(
            container, model_dir, images=self.images, services=self.services,
            log_paths=[directory / "prepare.log"], on_log=None,
            settings={"SAGEMAKER_MAX_PAYLOAD_IN_MB": str(variant.payload_mb if variant else REALTIME_PAYLOAD_MB)},
            instance_type=variant.instance_type if variant else instance_type, store=self.store,
        )  # fmt: skip

    def _build_variant(
        self, ep: _Endpoint, pv: dict, models: dict[str, dict], generation: int, config: dict
    ) -> _Variant:
        name = pv.get("VariantName") or "AllTraffic"
        model_name = pv.get("ModelName")
        model = models.get(model_name)
        if model is None:
            raise HostingError(f'Could not find model "{model_name}".')
        kind = model_kind(model)
        containers_ = _containers_of(model)
        if not containers_:
            raise HostingError(f"model {model_name!r} has no container")
        instance_type = pv.get("InstanceType")
        count = 1 if pv.get("ServerlessConfig") else int(pv.get("InitialInstanceCount") or 1)
        directory = ep.directory / f"g{generation}" / name
        directory.mkdir(parents=True, exist_ok=True)
        v = _Variant(
            name, model_name, model, kind, float(pv.get("InitialVariantWeight", 1.0)), instance_type,
            directory, count, [], _hostnames(containers_),
            ASYNC_PAYLOAD_MB if config.get("AsyncInferenceConfig") else REALTIME_PAYLOAD_MB,
        )  # fmt: skip
        if kind != MULTI_MODEL:
            for i, container in enumerate(containers_):
                model_dir = directory / f"model-{i + 1}"
                model_dir.mkdir()
                if container.get("ModelDataUrl"):
                    serving.unpack_model(self.store, container["ModelDataUrl"], model_dir)
                v.served.append(self._prepare(container, model_dir, v, directory))
        return v

    def _start_instance(self, ep: _Endpoint, v: _Variant) -> _Instance:
        instance_id = f"i-{next(v.numbering)}"
        refs: list[ContainerRef] = []
        try:
            for served, hostname in zip(v.served, v.hostnames, strict=False):
                refs.append(
                    containers.start(v.directory / "instances" / instance_id, hostname, hostname, served)
                )
            for ref in refs:
                what = f"endpoint {ep.name} variant {v.name} {instance_id} container {ref.hostname}"
                containers.wait_ready(ref, what)
        except BaseException:
            for ref in refs:
                containers.stop(ref)
            raise
        return _Instance(instance_id, refs)

    def _stop_instance(self, instance: _Instance, *, drain: bool = False) -> None:
        deadline = time.monotonic() + INVOKE_TIMEOUT_S
        while drain and instance.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        with instance.lock:
            loaded, instance.models = list(instance.models.values()), OrderedDict()
        for ref in [*instance.containers, *(m.ref for m in loaded if m.ref is not None)]:
            containers.stop(ref)

    def _stop_variant(self, v: _Variant) -> None:
        instances, v.instances = v.instances, []
        for instance in instances:
            self._stop_instance(instance, drain=True)

    def _start_variants(self, ep: _Endpoint, config: dict, models: dict[str, dict], generation: int) -> dict:
        variants: dict[str, _Variant] = {}
        try:
            for pv in config.get("ProductionVariants") or []:
                v = self._build_variant(ep, pv, models, generation, config)
                variants[v.name] = v
                for _ in range(v.desired_count):
                    v.instances = [*v.instances, self._start_instance(ep, v)]
            return variants
        except BaseException:
            for v in variants.values():
                self._stop_variant(v)
            raise

    def _bring_up(self, ep: _Endpoint) -> None:
        try:
            variants = self._start_variants(ep, ep.config, ep.models, 0)
        except (HostingError, ContainerError, JobRequestError, OSError, ValueError) as err:
            with ep.lock:
                ep.status, ep.failure_reason, ep.modified = FAILED, str(err), _now()
            log.warning("endpoint %s failed: %s", ep.name, err)
        else:
            with ep.lock:
                if ep.status == DELETING:
                    for v in variants.values():
                        self._stop_variant(v)
                    return
                ep.variants, ep.status, ep.modified = variants, IN_SERVICE, _now()
            log.info("endpoint %s in service: %s", ep.name, ", ".join(
                f"{v.name} ({len(v.instances)} x {v.kind})" for v in variants.values()))  # fmt: skip
        self._save(ep)

    def _update(self, ep: _Endpoint, config: dict, models: dict[str, dict]) -> None:
        """The new config's variants start beside the old ones; the old serve until the new are in service."""
        generation = ep.generation + 1
        try:
            variants = self._start_variants(ep, config, models, generation)
        except (HostingError, ContainerError, JobRequestError, OSError, ValueError) as err:
            with ep.lock:
                ep.status, ep.failure_reason, ep.modified = IN_SERVICE, f"Update failed: {err}", _now()
            self._save(ep)
            return
        with ep.lock:
            old, ep.variants = list(ep.variants.values()), variants
            ep.config, ep.models, ep.generation = config, models, generation
            ep.status, ep.failure_reason, ep.modified = IN_SERVICE, None, _now()
        self._save(ep)
        for v in old:
            self._stop_variant(v)
        shutil.rmtree(ep.directory / f"g{generation - 1}", ignore_errors=True)

    # -- records ----------------------------------------------------------------------------------------------

    def _get(self, name: str) -> _Endpoint:
        ep = self._endpoints.get(name)
        if ep is None:
            raise HostingError(f'Could not find endpoint "{name}".')
        return ep

    def _save(self, ep: _Endpoint) -> None:
        refs = []
        for v in list(ep.variants.values()):
            for instance in v.instances:
                refs += [asdict(r) for r in instance.containers]
                refs += [asdict(m.ref) for m in list(instance.models.values()) if m.ref is not None]
        doc = {
            "name": ep.name, "status": ep.status, "config": ep.config, "models": ep.models,
            "created": ep.created.isoformat(), "failure_reason": ep.failure_reason,
            "desired": {v.name: [v.weight, v.desired_count] for v in ep.variants.values()},
            "containers": refs,
        }  # fmt: skip
        path = ep.directory / "state.json"
        if not ep.directory.is_dir():
            return
        tmp = path.with_name(".state.json.tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, path)

    def _restore(self) -> None:
        """Stop what an earlier process left running; bring its endpoints back from their configs."""
        if not self.root.is_dir():
            return
        for path in sorted(self.root.glob("*/state.json")):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            for ref in doc.get("containers", []):
                with contextlib.suppress(TypeError, KeyError):
                    containers.stop(ContainerRef(**{**ref, "process": ProcessRef(**ref["process"])}))
            if doc.get("status") in (FAILED, DELETING):
                shutil.rmtree(path.parent, ignore_errors=True)
                continue
            created = datetime.fromisoformat(doc["created"])
            ep = _Endpoint(doc["name"], CREATING, doc["config"], doc["models"], created, _now(), path.parent)
            for child in path.parent.glob("g*"):
                shutil.rmtree(child, ignore_errors=True)
            self._endpoints[ep.name] = ep
            self._save(ep)
            log.info("endpoint %s: bringing it back from its config", ep.name)
            self._work.submit(self._bring_up, ep)

    def wait(self, name: str, timeout: float = 300.0) -> str:
        """Until the endpoint is no longer Creating/Updating; its status."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ep = self._endpoints.get(name)
            if ep is None or ep.status not in (CREATING, UPDATING):
                return ep.status if ep else "Deleted"
            time.sleep(0.05)
        return self._get(name).status

    def close(self, *, delete: bool = False) -> None:
        """Stop background work and every endpoint's containers. The records stay (a later process brings
        the endpoints back from their configs) unless ``delete``."""
        self._work.shutdown(wait=True, cancel_futures=True)
        for name in list(self._endpoints):
            if delete:
                with contextlib.suppress(HostingError):
                    self.delete_endpoint(name)
                continue
            ep = self._endpoints[name]
            for variant in list(ep.variants.values()):
                for instance in variant.instances:
                    self._stop_instance(instance, drain=True)
