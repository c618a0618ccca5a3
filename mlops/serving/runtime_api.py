"""The ``sagemaker-runtime`` API over the local endpoints: what application code calls, unchanged.

``InvokeEndpoint`` is ``POST /endpoints/<EndpointName>/invocations`` with the payload as the body and the
request's ``ContentType``/``Accept``/``CustomAttributes`` as headers (botocore's service model,
``sagemaker-runtime`` ``2017-05-13``). Here it goes to the local endpoint of that name, through its front,
and the answer keeps the API's shape: the container's body with its ``Content-Type`` and the
``x-Amzn-Invoked-Production-Variant`` header; an unknown endpoint is a ``ValidationError`` (400); a
container's 4xx/5xx is a ``ModelError`` (424) carrying ``OriginalStatusCode`` and the container's message,
which boto3 raises as ``ModelError``. Signatures are not checked: any credentials work, none are needed.

Used by the job gateway (:mod:`mlops.local.aws_standin`, jobs' ``AWS_ENDPOINT_URL``) and by
``mlops endpoints api`` (this machine's applications: ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``).
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import struct
import threading
import uuid
import zlib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)

INVOKE_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")
ASYNC_PATH = re.compile(r"^/endpoints/([^/]+)/async-invocations$")
STREAM_PATH = re.compile(r"^/endpoints/([^/]+)/invocations-response-stream$")
_PART_BYTES = 64 * 1024  # a PayloadPart carries at most this much of what the model has sent so far
ENV_VAR = "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"  # botocore's service-specific endpoint variable
_JSON = "application/x-amz-json-1.1"
_FORWARDED = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes", "X-Amzn-SageMaker-Target-Model")
_TIMEOUT_S = 60.0  # InvokeEndpoint's own limit on a container's answer
VARIANT = "AllTraffic"  # the SDK's name for a single production variant


class Refused(Exception):
    """What a hosted endpoint refuses to take (the API's ``ValidationError``); the message is the API's."""


class ContainerAnswer(Exception):
    """A container answered with an error status (``ModelError`` in the API)."""

    def __init__(self, status: int, payload: bytes, container: str = ""):
        super().__init__(f"{container or 'container'} answered {status}")
        self.status, self.payload, self.container = status, payload, container


def _error(status: int, kind: str, message: str, **extra) -> tuple[int, list, bytes]:
    body = {"__type": kind, "message": message, **extra}
    return status, [("Content-Type", _JSON), ("x-amzn-ErrorType", kind)], json.dumps(body).encode()


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of the AWS event stream encoding (``application/vnd.amazon.eventstream``): a prelude of
    total and header lengths with its CRC32, string-typed headers, the payload, the message's CRC32."""
    encoded = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v.encode())) + v.encode()
        for k, v in headers.items()
    )
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _part(data: bytes) -> bytes:
    return event_message(
        {":event-type": "PayloadPart", ":content-type": "application/octet-stream", ":message-type": "event"},
        data,
    )


def model_error_message(status: int, text: str) -> str:
    """How the runtime API reports a container's error status (and the async queue its failures)."""
    return f'Received client error ({status}) from model with message "{text}".'


def _model_error(status: int, payload: bytes) -> tuple[int, list, bytes]:
    text = payload.decode("utf-8", "replace")[:1000]
    return _error(
        424, "ModelError", model_error_message(status, text), OriginalStatusCode=status, OriginalMessage=text
    )


def _unreachable(err: OSError) -> tuple[int, list, bytes]:
    return _error(424, "ModelError", f"Received server error (0) from model: {err}", OriginalStatusCode=0)


def _realtime_endpoint(endpoint: str, home):
    """``(info, None)`` for an endpoint that takes InvokeEndpoint now, else ``(None, the API's error)``."""
    from mlops.serving.supervisor import EndpointError, get_endpoint

    try:
        info = get_endpoint(endpoint, home=home)
    except EndpointError:
        return None, _error(400, "ValidationError", f"Endpoint {endpoint} not found.")
    if info.async_config:
        return None, _error(
            400, "ValidationError",
            f"Endpoint {endpoint} is an asynchronous endpoint: call InvokeEndpointAsync with an InputLocation.",
        )  # fmt: skip
    if info.active is None:  # an update in progress keeps serving its active version, as SageMaker does
        return None, _error(
            400, "ValidationError", f"Endpoint {endpoint} is {info.status}: no version serves it."
        )
    return info, None


def _target_problem(info, headers) -> tuple[int, list, bytes] | None:
    """A multi-model endpoint's TargetModel that names no archive under its prefix: the API's refusal."""
    if not getattr(info.active, "multi_model", False):
        return None
    target = headers.get("X-Amzn-SageMaker-Target-Model")
    if not target:
        return _error(
            400, "ValidationError", f"Endpoint {info.name} is a multi-model endpoint: give TargetModel."
        )
    prefix = Path(info.active.model_dir)
    archive = prefix.joinpath(*target.split("/"))
    if ".." in target.split("/") or not archive.is_file():
        return _error(
            400, "ValidationError",
            f"Failed to download model data (TargetModel {target}: no object under the endpoint's ModelDataUrl).",
        )  # fmt: skip
    return None


def container_headers(headers, accept: str | None = None) -> dict[str, str]:
    """The request's headers the container gets; ``accept`` where the operation names it another way."""
    out = {name: headers.get(name) for name in _FORWARDED if headers.get(name)}
    if accept:
        out["Accept"] = accept
    out.setdefault("Content-Type", "application/octet-stream")
    return out


def _open_hosted_stream(hosting, endpoint: str, body: bytes, headers, write_head, write_part):
    """A hosted endpoint's streaming answer: ``(variant, connection, response)``, or None once answered."""
    out = container_headers(headers, headers.get("X-Amzn-SageMaker-Accept"))
    if headers.get("X-Amzn-SageMaker-Target-Variant"):
        out["X-Amzn-SageMaker-Target-Variant"] = headers["X-Amzn-SageMaker-Target-Variant"]
    try:
        if hosting.info(endpoint).async_config:
            write_head(*_error(400, "ValidationError", f"Endpoint {endpoint} is an asynchronous endpoint."))
            return None
        opened = hosting.open_stream(endpoint, body, out)
    except Refused as err:
        write_head(*_error(400, "ValidationError", str(err)))
        return None
    except OSError as err:
        write_head(*_unreachable(err))
        return None
    if opened is None:  # a pipeline, Direct or multi-model: answered whole, sent as one part
        status, answer, payload = _invoke_hosted(hosting, endpoint, body, out, None)
        if status != 200:
            write_head(status, answer, payload)
            return None
        answer = dict(answer)
        write_head(200, [("Content-Type", "application/vnd.amazon.eventstream"),
                         ("X-Amzn-SageMaker-Content-Type", answer["Content-Type"]),
                         ("x-Amzn-Invoked-Production-Variant", answer["x-Amzn-Invoked-Production-Variant"])],
                   None)  # fmt: skip
        for start in range(0, len(payload), _PART_BYTES):
            write_part(_part(payload[start : start + _PART_BYTES]))
        return None
    return opened


def invoke_stream(endpoint: str, body: bytes, headers, home, write_head, write_part, hosting=None) -> None:
    """``InvokeEndpointWithResponseStream``: the model's answer as PayloadPart events, each sent as soon as
    that much of it arrived from the model server. ``write_head(status, headers, body_or_None)`` starts the
    answer (an error is a whole JSON answer instead); ``write_part(bytes)`` sends one event."""
    if hosting is not None and hosting.has(endpoint):
        opened = _open_hosted_stream(hosting, endpoint, body, headers, write_head, write_part)
        if opened is None:
            return None
        variant, conn, response = opened
    else:
        info, error = _realtime_endpoint(endpoint, home)
        error = error or _target_problem(info, headers)
        if error is not None:
            return write_head(*error)
        out = container_headers(headers, headers.get("X-Amzn-SageMaker-Accept"))
        conn = http.client.HTTPConnection("127.0.0.1", info.port, timeout=_TIMEOUT_S)
        try:
            conn.request("POST", "/invocations", body=body, headers=out)
            response = conn.getresponse()
        except OSError as err:
            conn.close()
            return write_head(*_unreachable(err))
        variant = VARIANT
    try:
        if response.status >= 400:
            return write_head(*_model_error(response.status, response.read()))
        content_type = response.getheader("Content-Type") or "application/octet-stream"
        write_head(200, [("Content-Type", "application/vnd.amazon.eventstream"),
                         ("X-Amzn-SageMaker-Content-Type", content_type),
                         ("x-Amzn-Invoked-Production-Variant", variant)], None)  # fmt: skip
        while chunk := response.read1(_PART_BYTES):
            write_part(_part(chunk))
    except OSError as err:
        return write_head(*_unreachable(err))
    finally:
        conn.close()


class CaptureSink(Protocol):
    """Where an endpoint's DataCaptureConfig sends what it captures (:mod:`mlops.local.data_capture`)."""

    def record(self, info, variant: str, request: tuple[bytes, str | None], response: tuple[bytes, str]): ...


def _invoke_hosted(hosting, endpoint: str, body: bytes, headers, capture) -> tuple[int, list, bytes]:
    """InvokeEndpoint on an endpoint CreateEndpoint made (:mod:`mlops.local.hosting.endpoints`)."""
    info = hosting.info(endpoint)
    if info.async_config:
        return _error(
            400, "ValidationError",
            f"Endpoint {endpoint} is an asynchronous endpoint: call InvokeEndpointAsync with an InputLocation.",
        )  # fmt: skip
    try:
        answer = hosting.invoke(endpoint, body, headers)
    except Refused as err:
        return _error(400, "ValidationError", str(err))
    except ContainerAnswer as err:
        return _model_error(err.status, err.payload)
    except OSError as err:
        return _unreachable(err)
    if capture is not None and info.data_capture:
        request_type = headers.get("Content-Type") or "application/octet-stream"
        capture.record(info, answer.variant, (body, request_type), (answer.body, answer.content_type))
    out = [("Content-Type", answer.content_type), ("x-Amzn-Invoked-Production-Variant", answer.variant)]
    return 200, out + list(answer.headers.items()), answer.body


def invoke(
    endpoint: str, body: bytes, headers, home: str | Path | None, capture: CaptureSink | None = None,
    hosting=None,
) -> tuple[int, list, bytes]:  # fmt: skip
    """``InvokeEndpoint`` on the local endpoint ``endpoint``: ``(status, headers, body)`` as the API answers;
    ``capture`` records it when the endpoint's config captures data. ``hosting``: the endpoints that
    CreateEndpoint made, looked up first."""
    if hosting is not None and hosting.has(endpoint):
        return _invoke_hosted(hosting, endpoint, body, headers, capture)
    info, error = _realtime_endpoint(endpoint, home)
    error = error or _target_problem(info, headers)
    if error is not None:
        return error
    out = container_headers(headers)
    conn = http.client.HTTPConnection("127.0.0.1", info.port, timeout=_TIMEOUT_S)
    try:
        conn.request("POST", "/invocations", body=body, headers=out)
        response = conn.getresponse()
        status, payload = response.status, response.read()
        content_type = response.getheader("Content-Type") or "application/octet-stream"
    except OSError as err:
        return _unreachable(err)
    finally:
        conn.close()
    if status >= 400:
        return _model_error(status, payload)
    if capture is not None and info.data_capture:
        capture.record(info, VARIANT, (body, out.get("Content-Type")), (payload, content_type))
    # one production variant per local endpoint (blue/green versions are not variants)
    return 200, [("Content-Type", content_type), ("x-Amzn-Invoked-Production-Variant", VARIANT)], payload


class AsyncBackend(Protocol):
    """Where InvokeEndpointAsync requests go: a queue that reads the input, invokes, writes the output."""

    def submit(self, info, request: AsyncRequest) -> None: ...


@dataclass(frozen=True)
class AsyncRequest:
    endpoint: str
    inference_id: str
    input_location: str
    output_location: str
    failure_location: str | None
    content_type: str
    accept: str | None
    custom_attributes: str | None


def invoke_async(
    endpoint: str, headers, home, backend: AsyncBackend | None, hosting=None
) -> tuple[int, list, bytes]:
    """``InvokeEndpointAsync``: queue the request and answer 202 with where its output will be."""
    from mlops.serving.supervisor import EndpointError, get_endpoint

    try:
        info = (
            hosting.info(endpoint)
            if hosting is not None and hosting.has(endpoint)
            else get_endpoint(endpoint, home=home)
        )
    except EndpointError:
        return _error(400, "ValidationError", f"Endpoint {endpoint} not found.")
    config = info.async_config or {}
    output = (config.get("OutputConfig") or {}).get("S3OutputPath")
    if backend is None or not output:
        return _error(
            400, "ValidationError", f"Endpoint {endpoint} is not configured for asynchronous inference."
        )
    source = headers.get("X-Amzn-SageMaker-InputLocation")
    if not source or not source.startswith("s3://"):
        return _error(400, "ValidationError", "InputLocation must be an s3:// URI of the request payload.")
    inference_id = headers.get("X-Amzn-SageMaker-Inference-Id") or str(uuid.uuid4())
    if not re.fullmatch(r"[\w.-]{1,64}", inference_id):
        return _error(400, "ValidationError", f"InferenceId {inference_id!r} is not valid.")
    failure = (config.get("OutputConfig") or {}).get("S3FailurePath")
    request = AsyncRequest(
        endpoint, inference_id, source, f"{output.rstrip('/')}/{inference_id}.out",
        f"{failure.rstrip('/')}/{inference_id}-error.out" if failure else None,
        headers.get("X-Amzn-SageMaker-Content-Type") or "application/octet-stream",
        headers.get("X-Amzn-SageMaker-Accept"), headers.get("X-Amzn-SageMaker-Custom-Attributes"),
    )  # fmt: skip
    backend.submit(info, request)
    answer = [
        ("Content-Type", "application/json"),
        ("X-Amzn-SageMaker-OutputLocation", request.output_location),
    ]
    if request.failure_location:
        answer.append(("X-Amzn-SageMaker-FailureLocation", request.failure_location))
    return 202, answer, json.dumps({"InferenceId": inference_id}).encode()


def _handler(
    home: str | Path | None, backend: AsyncBackend | None = None, capture: CaptureSink | None = None,
    hosting=None, services: dict | None = None,
):  # fmt: skip
    class RuntimeApi(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # the head and the body are two writes: with Nagle the body waits for the client's delayed ACK (40 ms)
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            log.debug("runtime api: " + fmt, *args)

        def _answer(self, status: int, headers: list, payload: bytes) -> None:
            self.send_response(status)
            for key, value in headers:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            target = self.headers.get("X-Amz-Target") or ""
            if path == "/" and target:
                service = (services or {}).get(target.split(".", 1)[0])
                if service is None:
                    self._answer(*_error(400, "UnknownOperationException", f"no service for {target}"))
                else:
                    self._answer(*service(target, body))
            elif match := INVOKE_PATH.match(path):
                self._answer(*invoke(match.group(1), body, self.headers, home, capture, hosting))
            elif match := STREAM_PATH.match(path):
                self._stream(match.group(1), body)
            elif match := ASYNC_PATH.match(path):
                self._answer(*invoke_async(match.group(1), self.headers, home, backend, hosting))
            else:
                self._answer(*_error(404, "UnknownOperationException", f"no operation at {self.path}"))

        def _stream(self, endpoint: str, body: bytes) -> None:
            chunked = []

            def head(status: int, headers: list, payload: bytes | None) -> None:
                if payload is not None:
                    self._answer(status, headers, payload)
                    return
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunked.append(True)

            def part(event: bytes) -> None:
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()

            invoke_stream(endpoint, body, self.headers, home, head, part, hosting)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")

        def do_GET(self):
            self._answer(*_error(404, "UnknownOperationException", f"no operation at {self.path}"))

    return RuntimeApi


class RuntimeApiServer:
    """``with RuntimeApiServer(home, port) as api: api.url``: the API on 127.0.0.1 (port 0: a free one).

    ``hosting``: the endpoints CreateEndpoint made (InvokeEndpoint looks there first); ``services``: the
    JSON APIs served at ``/`` by their ``X-Amz-Target`` prefix (``SageMaker``: the control plane,
    ``AnyScaleFrontendService``: Application Auto Scaling), each ``(target, body) -> (status, headers, body)``."""

    def __init__(
        self, home: str | Path | None, port: int = 0, backend: AsyncBackend | None = None,
        capture: CaptureSink | None = None, hosting=None, services: dict | None = None,
    ):  # fmt: skip
        self.home = home
        handler = _handler(home, backend, capture, hosting, services)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RuntimeApiServer:
        threading.Thread(target=self._server.serve_forever, name="mlops-runtime-api", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
