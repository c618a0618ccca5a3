"""Asynchronous inference for local endpoints: InvokeEndpointAsync's queue, as SageMaker runs it.

A request names its payload in S3 (``InputLocation``); the endpoint's queue reads it from the store, posts it
to the serving version's ``/invocations`` (past the real-time front: async payloads go up to 1 GB), and writes
the answer to ``<S3OutputPath>/<InferenceId>.out``, or the error to ``<S3FailurePath>/<InferenceId>-error.out``.
At most ``ClientConfig.MaxConcurrentInvocationsPerInstance`` requests of an endpoint run at once; the others
wait in order. ``NotificationConfig`` topics get SageMaker's notification message, appended as a JSON line to
``<home>/topics/<topic name>.jsonl`` (the local topic: ``mlops endpoints notifications`` reads it).

The queue lives in the process that serves the API (``mlops endpoints api``): requests still queued when it
stops are not run.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from mlops.local.s3store import S3Store, S3StoreError
from mlops.serving import http_connection
from mlops.serving.runtime_api import AsyncRequest, ContainerAnswer, model_error_message

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 2
_CHUNK = 1 << 20
_TIMEOUT_S = 3600.0  # InvocationTimeoutSeconds' ceiling


def topic_path(home: Path, topic_arn: str) -> Path:
    """The file a topic's messages are appended to: ``<home>/topics/<name>.jsonl`` (the ARN's last part)."""
    name = topic_arn.rsplit(":", 1)[-1] or "topic"
    if "/" in name or name in (".", ".."):
        raise ValueError(f"topic {topic_arn!r} has no usable name")
    return Path(home) / "topics" / f"{name}.jsonl"


def read_topic(home: Path, topic_arn: str) -> list[dict]:
    path = topic_path(home, topic_arn)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class AsyncQueue:
    """The queue behind InvokeEndpointAsync for every local endpoint under ``home``."""

    def __init__(self, home: str | Path, store_root: Path | None = None, hosting=None):
        self.home = Path(home)
        self.store = S3Store(Path(store_root) if store_root else self.home / "s3")
        self.hosting = hosting  # the endpoints CreateEndpoint made (:mod:`mlops.local.hosting.endpoints`)
        self._backlog: dict[str, int] = {}
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._lock = threading.Lock()
        self._topics = threading.Lock()

    def submit(self, info, request: AsyncRequest) -> None:
        config = info.async_config or {}
        client = config.get("ClientConfig") or {}
        workers = int(client.get("MaxConcurrentInvocationsPerInstance") or DEFAULT_CONCURRENCY)
        with self._lock:
            pool = self._pools.get(request.endpoint)
            if pool is None:
                pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"async-{request.endpoint}")
                self._pools[request.endpoint] = pool
        received = _now()
        with self._lock:
            self._backlog[request.endpoint] = self._backlog.get(request.endpoint, 0) + 1
        pool.submit(self._run, request, config, received)

    def backlog(self, endpoint: str) -> int:
        """Requests of ``endpoint`` queued or running (``ApproximateBacklogSize``)."""
        with self._lock:
            return self._backlog.get(endpoint, 0)

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.shutdown(wait=True, cancel_futures=True)
            self._pools.clear()

    # ------------------------------------------------------------------------------------------- one run
    def _run(self, request: AsyncRequest, config: dict, received: str) -> None:
        try:
            self._run_one(request, config, received)
        finally:
            with self._lock:
                self._backlog[request.endpoint] -= 1

    def _run_one(self, request: AsyncRequest, config: dict, received: str) -> None:
        try:
            content_type, size = self._invoke(request)
        except Exception as err:  # the request's failure, never the queue's
            message = str(err) or type(err).__name__
            log.warning("async %s on %s failed: %s", request.inference_id, request.endpoint, message)
            if request.failure_location:
                try:
                    self.store.put_bytes(request.failure_location, message.encode())
                except S3StoreError as store_err:
                    log.error("async %s: failure not written: %s", request.inference_id, store_err)
            self._notify(config, "ErrorTopic", request, received, "Failed", {"failureReason": message})
            return
        self._notify(
            config, "SuccessTopic", request, received, "Completed",
            {"contentType": content_type, "outputLocation": request.output_location, "size": size},
        )  # fmt: skip

    def _invoke(self, request: AsyncRequest) -> tuple[str, int]:
        if self.hosting is not None and self.hosting.has(request.endpoint):
            return self._invoke_hosted(request)
        from mlops.serving.supervisor import get_endpoint

        info = get_endpoint(request.endpoint, home=self.home)  # now: a deployment may have switched versions
        if info.active is None:
            raise RuntimeError(f"endpoint {request.endpoint} has no serving version")
        source = self.store.path(request.input_location)
        if not source.is_file():
            raise RuntimeError(f"input {request.input_location} does not exist")
        headers = {"Content-Type": request.content_type, "Content-Length": str(source.stat().st_size)}
        if request.accept:
            headers["Accept"] = request.accept
        if request.custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes
        # the version itself, past the real-time front and its 6 MB limit
        conn = http_connection(info.active.socket or info.active.port, _TIMEOUT_S)
        try:
            with open(source, "rb") as body:  # streamed: up to 1 GB never sits in memory here
                conn.request("POST", "/invocations", body=body, headers=headers)
            response = conn.getresponse()
            if response.status >= 400:
                text = response.read(4096).decode("utf-8", "replace").strip()
                raise RuntimeError(model_error_message(response.status, text))
            content_type = response.getheader("Content-Type") or "application/octet-stream"
            with tempfile.NamedTemporaryFile(dir=self.store.root, prefix=".async-", delete=False) as out:
                shutil.copyfileobj(response, out, _CHUNK)
                size = out.tell()
        finally:
            conn.close()
        try:
            self.store.put_file(request.output_location, Path(out.name))
        finally:
            Path(out.name).unlink(missing_ok=True)
        return content_type, size

    def _invoke_hosted(self, request: AsyncRequest) -> tuple[str, int]:
        source = self.store.path(request.input_location)
        if not source.is_file():
            raise RuntimeError(f"input {request.input_location} does not exist")
        headers = {"Content-Type": request.content_type}
        if request.accept:
            headers["Accept"] = request.accept
        if request.custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes
        with tempfile.NamedTemporaryFile(dir=self.store.root, prefix=".async-", delete=False) as out:
            try:
                content_type = self.hosting.invoke_file(request.endpoint, source, headers, out, _TIMEOUT_S)
            except ContainerAnswer as err:
                Path(out.name).unlink(missing_ok=True)
                raise RuntimeError(
                    model_error_message(err.status, err.payload.decode("utf-8", "replace"))
                ) from None
            size = out.tell()
        try:
            self.store.put_file(request.output_location, Path(out.name))
        finally:
            Path(out.name).unlink(missing_ok=True)
        return content_type, size

    def _notify(self, config: dict, topic: str, request, received: str, status: str, response: dict) -> None:
        arn = (((config.get("OutputConfig") or {}).get("NotificationConfig")) or {}).get(topic)
        if not arn:
            return
        message = {
            "awsRegion": "local",
            "eventTime": _now(),
            "receivedTime": received,
            "invocationStatus": status,
            "requestParameters": {
                "accept": request.accept,
                "contentType": request.content_type,
                "endpointName": request.endpoint,
                "inputLocation": request.input_location,
            },
            "responseParameters": response,
            "inferenceId": request.inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
        path = topic_path(self.home, arn)
        with self._topics:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(message) + "\n")


def wait_for(store: S3Store, uri: str, timeout: float = 60.0) -> bool:
    """True once ``uri`` exists in ``store`` (for callers that poll the output location, as clients do)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if store.exists(uri):
            return True
        time.sleep(0.1)
    return False
