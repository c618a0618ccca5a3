"""Local stand-ins for the AWS APIs that job code calls, reachable from inside a job's network namespace.

A deploy pipeline's jobs call AWS from their containers: the smoke test invokes the staging endpoint
through ``sagemaker-runtime``, the ops job puts CloudWatch alarms and Application Auto Scaling policies.
Locally one gateway answers them all: ``POST /endpoints/<name>/invocations`` goes to the local endpoint
of that name, ``SageMaker.DescribeModelPackage`` to the local model registry (a deploy job reads the
approved version's artifact there), everything else to moto's server (a real implementation of those
APIs, on loopback).

Jobs live in private network namespaces, so the gateway listens on a Unix socket (a file: reachable from
any namespace); the sandbox runs a small forwarder inside the job's namespace from
``127.0.0.1:<BRIDGE_PORT>`` to that socket. Job code sees only ``AWS_ENDPOINT_URL``: the same boto3 calls
as on SageMaker.
"""

from __future__ import annotations

import http.client
import logging
import shutil
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from mlops.local.s3_api import S3Api
from mlops.serving.runtime_api import ASYNC_PATH, INVOKE_PATH, invoke_async

log = logging.getLogger(__name__)

BRIDGE_PORT = 4566  # the gateway, inside a job's namespace (LocalStack's port)
S3_BRIDGE_PORT = 4572  # the S3 API (LocalStack's old S3 port)
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}

# Runs inside the job's network namespace: 127.0.0.1:PORT -> a host Unix socket, for each (PORT, SOCKET) pair
# after READY in its arguments. Started by the sandbox's supervisor before the hosts; it touches READY once
# it listens on every port. Only the standard library, without site (-I -S): it starts in tens of ms.
FORWARDER = r"""
import socket, sys, threading
ready, pairs = sys.argv[1], sys.argv[2:]
servers = [(socket.create_server(("127.0.0.1", int(port))), path) for port, path in zip(pairs[::2], pairs[1::2])]
open(ready, "w").close()
def pipe(a, b):
    buf = bytearray(1 << 18)
    view = memoryview(buf)
    try:
        while n := a.recv_into(buf):
            b.sendall(view[:n])
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
def serve(client, path):
    upstream = socket.socket(socket.AF_UNIX)
    try:
        upstream.connect(path)
    except OSError:
        client.close(); upstream.close(); return
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)
def accept(server, path):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, path), daemon=True).start()
for server, path in servers[1:]:
    threading.Thread(target=accept, args=(server, path), daemon=True).start()
accept(*servers[0])
"""


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TCPHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalAws:
    """The gateway (moto's server behind it) and the store's S3 API, for one run.

    ``with LocalAws(home, region) as aws: ... aws.job_env(mode)``; entering is cheap: moto starts on the
    first request for it, rclone on the first ``job_env``/``bridges``.
    """

    def __init__(self, home: Path, region: str, store_root: Path | None = None):
        self.home = Path(home)
        self.region = region
        self._dir = Path(tempfile.mkdtemp(prefix="mlops-aws-"))  # short: Unix socket paths max ~108 bytes
        self.socket_path = str(self._dir / "gateway.sock")
        self.s3 = S3Api(Path(store_root) if store_root else self.home / "s3", self._dir / "s3", region)
        self._servers: list[socketserver.BaseServer] = []
        self._moto = None
        self._async = None
        self._capture = None
        self._lazy_lock = threading.Lock()  # moto, the async queue and data capture start on first use
        self.moto_port = 0
        self.tcp_port = 0

    # ---------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalAws:
        handler = self._handler()
        for server in (_UnixHTTPServer(self.socket_path, handler), _TCPHTTPServer(("127.0.0.1", 0), handler)):
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, name="mlops-aws-gateway", daemon=True).start()
        self.tcp_port = self._servers[1].server_address[1]
        log.info("local AWS stand-ins: gateway %s and 127.0.0.1:%d", self.socket_path, self.tcp_port)
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self.s3.close()
        if self._async is not None:
            self._async.close()
        with self._lazy_lock:
            if self._moto is not None:
                self._moto.stop()
                self._moto = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def _moto_server_port(self) -> int:
        """moto's port, starting it on first use (its import alone takes half a second)."""
        with self._lazy_lock:
            if self._moto is None:
                from moto.server import ThreadedMotoServer

                logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
                self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
                self._moto.start()
                self.moto_port = self._moto._server.server_port
                log.info("local AWS stand-ins: moto on 127.0.0.1:%d", self.moto_port)
            return self.moto_port

    # ------------------------------------------------------------------------------------------ for jobs
    def job_env(self, mode: str) -> dict[str, str]:
        """What a job needs to reach the stand-ins (in bwrap mode through the namespace's forwarders).

        Starts the S3 API (raises :class:`S3ApiError` in one line when rclone is missing). The key is this
        run's own: rclone checks it, moto takes any.
        """
        self.s3.start()
        bwrap = mode == "bwrap"
        port = BRIDGE_PORT if bwrap else self.tcp_port
        s3_port = S3_BRIDGE_PORT if bwrap else self.s3.port
        return {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            # botocore >= 1.31 (boto3, the AWS CLI, s3fs, the SageMaker SDK) prefers it for S3
            "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{s3_port}",
            "AWS_ACCESS_KEY_ID": self.s3.access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def bridges(self) -> list[tuple[int, str]]:
        """(port inside the job's namespace, Unix socket) pairs the sandbox forwards."""
        self.s3.start()
        return [(BRIDGE_PORT, self.socket_path), (S3_BRIDGE_PORT, self.s3.socket_path)]

    def client(self, service: str):
        """A boto3 client on the stand-ins (``s3``: on the store), for the executor's own checks and tests."""
        import boto3

        if service == "s3":
            return self.s3.start().client()
        return boto3.client(
            service,
            endpoint_url=f"http://127.0.0.1:{self.tcp_port}",
            region_name=self.region,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    # ------------------------------------------------------------------------------------------ gateway
    def _handler(self):
        aws = self

        class Gateway(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, fmt, *args):  # quiet: the executor's logs are the jobs'
                log.debug("gateway: " + fmt, *args)

            def address_string(self):
                return "job"

            def _relay(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                invoke, queued = INVOKE_PATH.match(path), ASYNC_PATH.match(path)
                if invoke and self.command == "POST":
                    status, headers, payload = aws._invoke(invoke.group(1), body, self.headers)
                elif queued and self.command == "POST":
                    status, headers, payload = invoke_async(
                        queued.group(1), self.headers, aws.home, aws._queue()
                    )
                elif self.headers.get("X-Amz-Target") == "SageMaker.DescribeModelPackage":
                    status, headers, payload = aws._describe_model_package(body)
                else:
                    status, headers, payload = aws._forward(
                        "127.0.0.1", aws._moto_server_port(), self.command, self.path, body, self.headers
                    )
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _relay

        return Gateway

    @staticmethod
    def _forward(
        host: str, port: int, method: str, path: str, body: bytes, headers
    ) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(host, port, timeout=120)
        try:
            out = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
            out["Host"] = f"{host}:{port}"
            conn.request(method, path, body=body, headers=out)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _describe_model_package(self, body: bytes) -> tuple[int, list, bytes]:
        """DescribeModelPackage of a version in the local registry, in the API's shape."""
        import json
        from datetime import datetime

        from mlops.local.state.home import Home

        headers = [("Content-Type", "application/x-amz-json-1.1")]
        try:
            arn = json.loads(body or b"{}").get("ModelPackageName") or ""
        except ValueError:
            arn = ""
        row = next((r for r in Home.open(self.home).registry.list() if r["arn"] == arn), None)
        if row is None:
            error = {"__type": "ValidationException", "message": f"Model package {arn!r} does not exist."}
            return 400, headers, json.dumps(error).encode()
        request = row.get("request") or {}
        container = ((request.get("InferenceSpecification") or {}).get("Containers") or [{}])[0]
        spec_container = {"Image": row.get("image"), "ModelDataUrl": row.get("model_data_url")}
        if container.get("Environment"):
            spec_container["Environment"] = container["Environment"]
        described = {
            "ModelPackageName": row["group_name"],
            "ModelPackageGroupName": row["group_name"],
            "ModelPackageVersion": row["version"],
            "ModelPackageArn": row["arn"],
            "CreationTime": datetime.fromisoformat(row["created_at"]).timestamp(),
            "InferenceSpecification": {
                "Containers": [{k: v for k, v in spec_container.items() if v}],
                "SupportedContentTypes": row.get("content_types") or [],
                "SupportedResponseMIMETypes": row.get("response_types") or [],
            },
            "ModelPackageStatus": "Completed",
            "ModelApprovalStatus": row["approval_status"],
        }
        return 200, headers, json.dumps(described).encode()

    def _queue(self):
        """The asynchronous endpoints' queue (InvokeEndpointAsync from a job), made on first use."""
        with self._lazy_lock:
            if self._async is None:
                from mlops.local.async_inference import AsyncQueue

                self._async = AsyncQueue(self.home, self.s3.store_root)
            return self._async

    def _invoke(self, endpoint: str, body: bytes, headers) -> tuple[int, list, bytes]:
        """sagemaker-runtime InvokeEndpoint against the local endpoint of that name."""
        from mlops.serving.runtime_api import invoke

        with self._lazy_lock:
            if self._capture is None:
                from mlops.local.data_capture import DataCapture

                self._capture = DataCapture(self.home, self.s3.store_root)
        return invoke(endpoint, body, headers, self.home, self._capture)


def forwarders_command(python: str, bridges, ready: str) -> list[str]:
    """One forwarder process for all of ``bridges`` (``(port, socket_path)`` pairs): one start per job."""
    pairs = [str(item) for port, path in bridges for item in (port, path)]
    return [python, "-I", "-S", "-c", FORWARDER, ready, *pairs]
