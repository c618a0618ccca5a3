"""Local stand-ins for the AWS APIs that job code calls, reachable from inside a job's network namespace.

A deploy pipeline's jobs call AWS from their containers: the smoke test invokes the staging endpoint
through ``sagemaker-runtime``, the ops job puts CloudWatch alarms and Application Auto Scaling policies.
Locally one gateway answers them all: ``POST /endpoints/<name>/invocations`` goes to the local endpoint
of that name, everything else to moto's server (a real implementation of those APIs, on loopback).

Jobs live in private network namespaces, so the gateway listens on a Unix socket (a file: reachable from
any namespace); the sandbox runs a small forwarder inside the job's namespace from
``127.0.0.1:<BRIDGE_PORT>`` to that socket. Job code sees only ``AWS_ENDPOINT_URL``: the same boto3 calls
as on SageMaker.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import shutil
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path

log = logging.getLogger(__name__)

BRIDGE_PORT = 4566
_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
}

# Runs inside the job's network namespace: 127.0.0.1:PORT -> the gateway's Unix socket. Started by the
# sandbox's supervisor before the hosts; it touches READY once it listens.
FORWARDER = r"""
import os, socket, sys, threading
port, path, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3]
server = socket.create_server(("127.0.0.1", port), reuse_port=False)
open(ready, "w").close()
def pipe(a, b):
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try: s.shutdown(socket.SHUT_RDWR)
            except OSError: pass
def serve(client):
    upstream = socket.socket(socket.AF_UNIX)
    try:
        upstream.connect(path)
    except OSError:
        client.close(); return
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
    pipe(client, upstream)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class _TCPHTTPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


class LocalAws:
    """moto's server + the gateway; ``with LocalAws(home, region) as aws: ... aws.job_env(mode)``."""

    def __init__(self, home: Path, region: str):
        self.home = Path(home)
        self.region = region
        self._dir = Path(tempfile.mkdtemp(prefix="mlops-aws-"))  # short: Unix socket paths max ~108 bytes
        self.socket_path = str(self._dir / "gateway.sock")
        self._servers: list[socketserver.BaseServer] = []
        self._moto = None
        self.moto_port = 0
        self.tcp_port = 0

    # ---------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> LocalAws:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        self.moto_port = self._moto._server.server_port
        handler = self._handler()
        for server in (_UnixHTTPServer(self.socket_path, handler), _TCPHTTPServer(("127.0.0.1", 0), handler)):
            self._servers.append(server)
            threading.Thread(target=server.serve_forever, name="mlops-aws-gateway", daemon=True).start()
        self.tcp_port = self._servers[1].server_address[1]
        log.info("local AWS stand-ins: gateway %s, moto on 127.0.0.1:%d", self.socket_path, self.moto_port)
        return self

    def __exit__(self, *exc) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        if self._moto is not None:
            self._moto.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    # ------------------------------------------------------------------------------------------ for jobs
    def job_env(self, mode: str) -> dict[str, str]:
        """What a job needs to reach the stand-ins (in bwrap mode through the namespace's forwarder)."""
        port = BRIDGE_PORT if mode == "bwrap" else self.tcp_port
        return {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    def bridges(self) -> list[tuple[int, str]]:
        return [(BRIDGE_PORT, self.socket_path)]

    def client(self, service: str):
        """A boto3 client on the stand-ins, for the executor's own checks and for tests."""
        import boto3

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
                match = _INVOKE.match(self.path.split("?")[0])
                if match and self.command == "POST":
                    status, headers, payload = aws._invoke(match.group(1), body, self.headers)
                else:
                    status, headers, payload = aws._forward(
                        "127.0.0.1", aws.moto_port, self.command, self.path, body, self.headers
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

    def _invoke(self, endpoint: str, body: bytes, headers) -> tuple[int, list, bytes]:
        """sagemaker-runtime InvokeEndpoint against the local endpoint of that name."""
        from mlops.serving.supervisor import EndpointError, get_endpoint

        try:
            info = get_endpoint(endpoint, home=self.home)
        except EndpointError:
            message = {"__type": "ValidationError", "message": f"Endpoint {endpoint} not found."}
            return 400, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(message).encode()
        port = int(info.url.rsplit(":", 1)[1].split("/")[0])
        status, out_headers, payload = self._forward(
            "127.0.0.1",
            port,
            "POST",
            "/invocations",
            body,
            {
                "Content-Type": headers.get("Content-Type", "application/json"),
                "Accept": headers.get("Accept", "*/*"),
            },
        )
        if status >= 400:
            # the runtime API reports a container error as ModelError with the container's status
            message = {
                "__type": "ModelError",
                "message": payload.decode(errors="replace")[:1000],
                "OriginalStatusCode": status,
            }
            return 424, [("Content-Type", "application/x-amz-json-1.1")], json.dumps(message).encode()
        kept = [(k, v) for k, v in out_headers if k.lower() == "content-type"]
        return 200, kept, payload


def forwarder_command(python: str, port: int, socket_path: str, ready: str) -> list[str]:
    return [python, "-c", FORWARDER, str(port), socket_path, ready]
