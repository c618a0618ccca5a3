"""Transform jobs (CreateTransformJob): the model's own serving runtime on ``InstanceCount`` sandboxed hosts,
fed by the batch data plane (:mod:`mlops.local.transform`) from this side.

As on SageMaker, each transform instance is a serving container (``GET /ping``, ``POST /invocations`` on
8080) that the service calls with batches of records; here the containers are sandboxed job hosts (their
own network, root and environment per image, :mod:`.sandbox`), each reached through a Unix socket in the one
dir it shares with this machine, and the service's part (splitting, batching, filters, joining, ``.out``
assembly, whole objects spread over the instances) runs in the executor. The ``.out`` files are uploaded to
``TransformOutput.S3OutputPath`` only when every object was transformed; a failed object fails the job with
its key and reason named.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.local import arns
from mlops.local.runtime import sandbox, serving
from mlops.local.runtime.common import (
    JobRequestError,
    JobResult,
    LogCallback,
    check_host_count,
    failure_reason,
    get,
    job_warning,
    make_host_dirs,
    now,
    s3_objects,
    s3_uri,
    volume_bytes,
)
from mlops.local.s3store import S3Store, S3StoreError
from mlops.local.transform import TransformError
from mlops.local.transform.job import TransformSpec, run_transform
from mlops.serving import http_connection

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 300.0  # how long a serving container may take to answer /ping (SageMaker allows minutes)


class ServingError(Exception):
    """The model server answered a batch with an error status; its body is the reason."""


def _request(path: Path, method: str, url: str, body: bytes | None, headers: dict, timeout: float):
    conn = http_connection(path, timeout)
    try:
        conn.request(method, url, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _invoker(path: Path, timeout: float):
    def invoke(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        # no ContentType, no header: a container decides what that means (XGBoost reads it as libsvm)
        headers = {"Content-Type": content_type} if content_type else {}
        if accept:
            headers["Accept"] = accept
        status, body = _request(path, "POST", "/invocations", payload, headers, timeout)
        if status >= 300:
            text = body.decode("utf-8", "replace").strip().splitlines()
            raise ServingError(
                f"the model server answered {status}: {text[0][:300] if text else '(no body)'}"
            )
        return body

    return invoke


@dataclass
class ServingGroup:
    """Model-server hosts running in a background thread (``sandbox.run_group``) until ``stop`` is set;
    ``outcome`` gets the group's result (``"group"``) or the error that ended it (``"error"``)."""

    thread: threading.Thread
    stop: threading.Event
    outcome: dict[str, Any]
    hosts: list
    sockets: list[Path]

    def ready(self) -> bool:
        """True once every host answers ``/ping``; False when the group ended or READY_TIMEOUT_S passed."""
        return _wait_ready(self.sockets, self.thread, READY_TIMEOUT_S)

    def start_failure(self) -> str:
        """Stop the hosts that never all became ready and say why: a host's failure file, exit code and
        stderr, else the timeout."""
        self.stop.set()
        self.thread.join()
        result = self.outcome.get("group")
        reason = None
        if result is not None and any(result.exit_codes):
            reason = failure_reason("output/failure", self.hosts, result.exit_codes, result.stderr_tail)
        return reason or f"the model server did not answer /ping within {READY_TIMEOUT_S:.0f} s"


def start_serving_group(
    served,
    hosts: list,
    *,
    volume_bytes: int | None = None,
    job_dir: Path,
    log_paths: list[Path],
    on_log,
    cancel: threading.Event | None,
    name: str,
) -> ServingGroup:
    """Start ``served`` (``serving.prepare``'s container) on each of ``hosts``; ``cancel`` (the job's stop)
    stops them too."""
    instances, sockets = [], []
    for h in hosts:
        instance, socket_path = serving.host(served, h, volume_bytes)
        instances.append(instance)
        sockets.append(socket_path)
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def serve() -> None:
        try:
            outcome["group"] = sandbox.run_group(
                instances,
                work_dir=job_dir / ".sandbox",
                log_paths=log_paths,
                on_line=(lambda host, _stream, line: on_log(host, line)) if on_log else None,
                cancel=stop,
            )
        except BaseException as err:  # reported in the caller's thread
            outcome["error"] = err

    def relay_cancel() -> None:
        while not stop.is_set():
            if cancel is not None and cancel.wait(0.2):
                stop.set()
            elif cancel is None:
                stop.wait(0.2)

    thread = threading.Thread(target=serve, name=name, daemon=True)
    thread.start()
    threading.Thread(target=relay_cancel, daemon=True).start()
    return ServingGroup(thread, stop, outcome, list(hosts), sockets)


def _wait_ready(sockets: list[Path], group: threading.Thread, timeout: float) -> bool:
    """True once every host answers ``/ping`` with 200; False when the group ended or time ran out."""
    pending, deadline = list(sockets), time.monotonic() + timeout
    while pending and time.monotonic() < deadline and group.is_alive():
        path = pending[0]
        if path.exists():
            try:
                status, _ = _request(path, "GET", "/ping", None, {}, 5.0)
            except OSError:
                status = 0
            if status == 200:
                pending.pop(0)
                continue
        time.sleep(0.1)
    return not pending


def model_container(model: dict) -> dict:
    """The one container a transform serves; an inference pipeline (several containers) is refused."""
    containers = model.get("Containers") or []
    if len(containers) > 1:
        raise JobRequestError(
            f"model {model.get('ModelName', '')!r} is an inference pipeline of {len(containers)} containers: "
            "transforms serve one container locally"
        )
    container = model.get("PrimaryContainer") or (containers[0] if containers else None)
    if not isinstance(container, dict) or not container.get("Image"):
        raise JobRequestError(f"model {model.get('ModelName', '')!r} names no container image")
    return container


def run_transform_job(
    request: dict[str, Any],
    *,
    job_name: str,
    store: S3Store,
    job_dir: Path,
    model: dict[str, Any],
    on_log: LogCallback | None = None,
    cancel: threading.Event | None = None,
    services: Any = None,
    images: dict[str, Any] | None = None,
    **_ignored: Any,
) -> JobResult:
    """Runs one transform job to the end; ``model`` is the CreateModel request of ``request["ModelName"]``.

    Raises :class:`JobRequestError` before anything starts on a bad request."""
    try:
        spec = TransformSpec.from_request(request)
    except TransformError as err:
        raise JobRequestError(str(err)) from err
    source = get(request, "TransformInput.DataSource.S3DataSource", dict)
    in_uri = s3_uri(get(source, "S3Uri", str, where="TransformInput.DataSource.S3DataSource"), "S3Uri")
    data_type = get(source, "S3DataType", str, "S3Prefix", where="TransformInput.DataSource.S3DataSource")
    if data_type not in ("S3Prefix", "ManifestFile"):
        raise JobRequestError(
            f"TransformInput.DataSource.S3DataSource.S3DataType {data_type!r} is not run locally"
        )
    out_uri = s3_uri(get(request, "TransformOutput.S3OutputPath", str), "TransformOutput.S3OutputPath")
    count = get(request, "TransformResources.InstanceCount", int, 1)
    if count < 1:
        raise JobRequestError(f"TransformResources.InstanceCount = {count} must be >= 1")
    check_host_count(count, "TransformResources.InstanceCount")
    container = model_container(model)
    volume = volume_bytes(request, "TransformResources.VolumeSizeInGB")
    max_runtime = (get(request, "ModelClientConfig", dict, {}) or {}).get(
        "InvocationsTimeoutInSeconds"
    ) or 600
    job_dir = Path(job_dir)
    hosts = make_host_dirs(job_dir, count)
    log_paths = [job_dir / f"{h.host}.log" for h in hosts]
    started = now()
    properties = {
        "TransformJobName": job_name,
        "TransformJobArn": arns.job_arn(request, "transform-job", job_name),
        **{k: v for k, v in request.items()},
        "TransformStartTime": started.isoformat(),
    }

    def finish(status: str, reason: str | None) -> JobResult:
        ended = now()
        properties.update(TransformJobStatus=status, TransformEndTime=ended.isoformat())
        if reason:
            properties["FailureReason"] = reason
        for lp in log_paths:
            lp.touch()
        return JobResult(status, reason, properties, {}, log_paths, job_dir)

    objects = s3_objects(store, in_uri, data_type, "TransformInput.DataSource.S3DataSource")
    if not objects:
        return finish("Failed", f"ClientError: no S3 objects found under {in_uri}")
    # unpacked once and mounted read-only on every host; each host's volume still counts it, as each
    # instance downloads it to its own volume on SageMaker
    model_dir = job_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir()
    if container.get("ModelDataUrl"):
        serving.unpack_model(store, container["ModelDataUrl"], model_dir)
    # what SageMaker tells a transform's container about its batches
    settings = dict(
        SAGEMAKER_BATCH="true",
        SAGEMAKER_MAX_PAYLOAD_IN_MB=str(spec.max_payload_mb),
        SAGEMAKER_BATCH_STRATEGY=spec.batch_strategy.upper().replace("RECORD", "_RECORD"),
        SAGEMAKER_MAX_CONCURRENT_TRANSFORMS=str(spec.max_concurrent),
        # the built-in algorithms' containers size their request limit from this (6 MiB by default)
        MAX_CONTENT_LENGTH=str(spec.max_payload_bytes or 100 * 2**20),
    )
    served = serving.prepare(
        container, model_dir, images=images, services=services, log_paths=log_paths, on_log=on_log,
        settings=settings, request_env=get(request, "Environment", dict, {}),
        instance_type=get(request, "TransformResources.InstanceType", str, None), store=store,
    )  # fmt: skip
    standin, launch = served.standin, served.launch
    serving_group = start_serving_group(
        served,
        hosts,
        volume_bytes=volume,
        job_dir=job_dir,
        log_paths=log_paths,
        on_log=on_log,
        cancel=cancel,
        name=f"transform-{job_name}",
    )
    stop, outcome, group = serving_group.stop, serving_group.outcome, serving_group.thread
    log.info("transform job %s: %d instance(s), %d object(s)", job_name, count, len(objects))
    staging = job_dir / "output"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    reason: str | None = None
    try:
        if not serving_group.ready():
            if cancel is not None and cancel.is_set():
                return finish("Stopped", "the job was stopped")
            return finish("Failed", standin.hint(f"ClientError: {serving_group.start_failure()}"))
        for h, lp in zip(hosts, log_paths, strict=True):
            job_warning(
                lp, h.host, f"serving with {launch.description}; {len(objects)} object(s)", on_log, "INFO"
            )

        def progress(done: int, total: int, records: int) -> None:
            job_warning(log_paths[0], hosts[0].host, f"transformed {done}/{total} objects, {records} records",
                        on_log, "INFO")  # fmt: skip

        local = [(rel, store.path(uri)) for uri, rel in objects]
        try:
            summary = run_transform(
                spec, local, lambda _key: staging,
                invoke_for=lambda i: _invoker(serving_group.sockets[i], float(max_runtime)), on_progress=progress,
            )  # fmt: skip
        except TransformError as err:
            reason = f"ClientError: {err}"
        if cancel is not None and cancel.is_set():
            return finish("Stopped", "the job was stopped")
    finally:
        stop.set()
        group.join()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["group"]
    if result.disk_full:
        return finish("Failed", f"ClientError: {result.disk_full}")
    crashed = [c for c in result.exit_codes if c not in (0, -15, 143)]
    if reason is None and crashed:
        reason = failure_reason("output/failure", hosts, result.exit_codes, result.stderr_tail)
    if reason is not None:
        return finish("Failed", standin.hint(reason))
    try:
        store.put_tree(out_uri, staging)
    except S3StoreError as err:
        return finish("Failed", f"ClientError: output not uploaded to {out_uri}: {err}")
    properties["TransformOutput"] = {**(request.get("TransformOutput") or {}), "S3OutputPath": out_uri}
    metrics = {"transform:objects": summary.objects, "transform:records": summary.records,
               "transform:batches": summary.batches}  # fmt: skip
    result = finish("Completed", None)
    result.metrics.update({k: float(v) for k, v in metrics.items()})
    return result
