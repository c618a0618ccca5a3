"""The always-on front of a local endpoint: owns the public port and forwards each request to the active version.

Blue/green needs the public port to keep answering while versions change, so versions listen on internal
ports and this small reverse proxy sits in front. It forwards request by request over pooled keep-alive
connections, so a switch takes effect on the next request of every client connection, and a request is
never lost to a version being retired (a stale pooled connection is retried on the active version).

It is an asyncio protocol with httptools' C parser rather than an ASGI app: it only frames requests and
relays bytes, and each request crosses it twice, so its per-request cost shows directly in the endpoint's
latency (see bench/bench_endpoint.py for direct vs front figures).

The supervisor switches the active version by rewriting ``upstream.json`` (atomically) in the endpoint dir;
the front polls its mtime, swaps its upstream and acknowledges in ``front.json`` with the same generation.

Client connections have two timeouts, checked by one sweep over the connections (no timer per request):

- header (``--header-timeout``, default 10 s, or ``MLOPS_FRONT_HEADER_TIMEOUT_S``): from a connection's start,
  or the first byte of a request, until its headers are complete; a slow client (slowloris) gets a 408 and
  is closed. A body must keep arriving: no byte for the idle timeout closes the connection too;
- idle (``--idle-timeout``, default 60 s, or ``MLOPS_FRONT_IDLE_TIMEOUT_S``): a keep-alive connection with no
  request in flight and none begun is closed quietly after this long.

A request being answered is never cut: the model server's own time limit (``UPSTREAM_TIMEOUT_S``) governs it.

A watchdog thread replaces the active version's model server when its process is gone (see
``supervisor.restart_dead_version``), retrying with a growing pause while the replacement fails;
``--no-restart`` or ``MLOPS_FRONT_RESTART=0`` turn it off.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httptools

from mlops.serving import socket_address
from mlops.serving.server import MAX_PAYLOAD_BYTES

log = logging.getLogger(__name__)

UPSTREAM_FILE = "upstream.json"
ACK_FILE = "front.json"
POLL_S = 0.05
UPSTREAM_TIMEOUT_S = 120.0
SHUTDOWN_GRACE_S = 10.0
HEADER_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 60.0
WATCH_S = 0.5  # how often the watchdog looks at the active version's process
RESTART_BACKOFF_MAX_S = 60.0
# Dropped when relaying a request: they describe the client's connection to us, not ours to the version.
HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer", b"upgrade")
    + (b"expect", b"content-length", b"host")
)
DISCARD_LIMIT = 8 * MAX_PAYLOAD_BYTES
REQUEST_TAIL = b"host: 127.0.0.1\r\ncontent-length: "


class UpstreamClosed(Exception):
    """A pooled connection closed before any byte of the answer came back: safe to send again elsewhere."""


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to a version server; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.waiter: asyncio.Future | None = None
        self.closed = False
        self.used = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._fail(ConnectionError(f"bad response from model server: {err}"))
            self.transport.close()

    def on_message_complete(self) -> None:
        raw, self.chunks = b"".join(self.chunks), []
        keep = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((raw, keep))
        if not keep:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.chunks:
            self._fail(ConnectionError("model server closed the connection mid-response"))
        else:
            self._fail(UpstreamClosed())

    def _fail(self, err: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(err)

    async def exchange(self, request: bytes) -> tuple[bytes, bool]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.used = True
        self.transport.write(request)
        return await asyncio.wait_for(self.waiter, UPSTREAM_TIMEOUT_S)


class Upstream:
    """The pool of connections to one version server: ``127.0.0.1:port``, or a Unix socket when the model
    server runs in a sandbox with a network of its own (``socket`` is relative to the front's state dir)."""

    def __init__(self, port: int, socket: str | None = None, state_dir: Path | None = None) -> None:
        self.port = port
        self.socket = socket
        self.state_dir = state_dir
        self.idle: list[UpstreamConnection] = []
        self.retired = False

    @property
    def where(self) -> str:
        return f"unix:{self.socket}" if self.socket else f"127.0.0.1:{self.port}"

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        if self.socket is None:
            _, conn = await loop.create_connection(UpstreamConnection, "127.0.0.1", self.port)
            return conn
        with socket_address(self.socket, self.state_dir or ".") as address:  # relative to the state dir
            _, conn = await loop.create_unix_connection(UpstreamConnection, address)
        return conn

    async def forward(self, request: bytes) -> tuple[bytes, bool]:
        conn = None
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                break
            conn = None
        if conn is None:
            conn = await self._connect()
        fresh = not conn.used
        try:
            raw, keep = await conn.exchange(request)
        except UpstreamClosed:
            if fresh:  # a brand-new connection that closed at once: the server is going away
                raise ConnectionError(f"model server {self.where} closed a new connection") from None
            raise
        except BaseException:
            conn.transport.close()
            raise
        if keep and not self.retired and not conn.closed:
            self.idle.append(conn)
        return raw, keep

    def retire(self) -> None:
        """Close idle connections; requests in flight on this version finish normally."""
        self.retired = True
        for conn in self.idle:
            conn.transport.close()
        self.idle.clear()


class Front:
    """Shared state: the active upstream and the requests in flight (for a graceful shutdown)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        header_timeout: float = HEADER_TIMEOUT_S,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.state_dir = state_dir
        self.upstream: Upstream | None = None
        self.generation = -1
        self._mtime = 0
        self.connections: set[ClientConnection] = set()
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout

    async def sweep(self) -> None:
        """Close the connections past their deadline (header or idle); those with an answer due are left."""
        interval = min(1.0, max(0.05, min(self.header_timeout, self.idle_timeout) / 4))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                if not conn.busy and conn.deadline is not None and now >= conn.deadline:
                    conn.time_out()

    def reload(self) -> None:
        path = self.state_dir / UPSTREAM_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        state = json.loads(path.read_text())
        if state["generation"] == self.generation:
            return
        old, self.upstream = self.upstream, Upstream(int(state["port"]), state.get("socket"), self.state_dir)
        self.generation = state["generation"]
        if old is not None:
            old.retire()
        tmp = self.state_dir / f".{ACK_FILE}.tmp"
        tmp.write_text(
            json.dumps(
                {
                    "generation": self.generation,
                    "port": self.upstream.port,
                    "socket": self.upstream.socket,
                    "pid": os.getpid(),
                }
            )
        )
        os.replace(tmp, self.state_dir / ACK_FILE)
        log.warning("front now forwards to %s (generation %d)", self.upstream.where, self.generation)

    async def watch(self) -> None:
        while True:
            try:
                self.reload()
            except (OSError, ValueError, KeyError) as err:  # a bad file: keep forwarding to the current one
                log.error("cannot read %s: %s", self.state_dir / UPSTREAM_FILE, err)
            await asyncio.sleep(POLL_S)

    async def forward(self, request: bytes) -> tuple[bytes, bool]:
        for _ in range(3):
            upstream = self.upstream
            if upstream is None:
                return _error(502, "no active model version behind this endpoint"), True
            try:
                return await upstream.forward(request)
            except UpstreamClosed:
                continue  # a stale keep-alive connection or a version being retired: send it again
            except (TimeoutError, OSError) as err:
                if self.upstream is not upstream:
                    continue  # the active version changed while this one failed: the new one gets it
                return _error(502, f"model server {upstream.where}: {type(err).__name__}: {err}"), True
        return _error(502, "model server kept closing connections"), True


def _error(status: int, message: str, *, close: bool = False) -> bytes:
    body = json.dumps({"error": message}).encode()
    reason = {
        400: b"Bad Request", 405: b"Method Not Allowed", 408: b"Request Timeout", 413: b"Payload Too Large"
    }.get(status, b"Bad Gateway")  # fmt: skip
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        reason,
        len(body),
        b"connection: close\r\n" if close else b"",
        body,
    )


class ClientConnection(asyncio.Protocol):
    """One client connection: parse requests, relay them in order, write the answers back."""

    def __init__(self, front: Front) -> None:
        self.front = front
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[bytes | None, bytes | None, bool]] = collections.deque()
        self.task: asyncio.Future | None = None
        self.busy = False
        self.closing = False
        self.parsing = False  # between the first byte of a request and its end
        self.deadline: float | None = time.monotonic() + front.header_timeout
        self._reset()

    def _reset(self) -> None:
        self.too_large = False
        self.url = b""
        self.head: list[bytes] = []
        self.body: list[bytes] = []
        self.size = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.front.connections.add(self)

    def connection_lost(self, exc) -> None:
        self.front.connections.discard(self)
        self.closing = True

    def time_out(self) -> None:
        """Past the header or idle deadline: a 408 for a request begun but incomplete, else a quiet close."""
        self.deadline = None
        if self.closing:
            return
        if self.parsing:
            self.transport.write(_error(408, "the request did not arrive in time", close=True))
        self.transport.close()
        self.closing = True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self._reject(400, f"malformed HTTP request: {err}")

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.parsing = True
        self.deadline = time.monotonic() + self.front.header_timeout

    def on_headers_complete(self) -> None:
        self.deadline = time.monotonic() + self.front.idle_timeout  # the body, if any, must keep coming

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" and value.isdigit() and int(value) > MAX_PAYLOAD_BYTES:
            self.too_large = True
        if name not in HOP_BY_HOP:
            self.head += (name, b": ", value, b"\r\n")

    def on_body(self, body: bytes) -> None:
        # An oversized body is read and dropped, then answered 413: closing on a client still sending
        # would reset the connection before it reads the answer. Past DISCARD_LIMIT we stop listening.
        self.size += len(body)
        self.deadline = time.monotonic() + self.front.idle_timeout
        if self.size > MAX_PAYLOAD_BYTES:
            self.too_large = True
            if self.size > DISCARD_LIMIT:
                raise httptools.HttpParserCallbackError("too large")
        if not self.too_large:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.parsing = False
        self.deadline = None  # queued or in flight: answered in turn, then idle
        method = self.parser.get_method()
        keep = self.parser.should_keep_alive()
        if self.too_large:
            message = f"payload of {self.size} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
            self._enqueue(None, _error(413, message), keep)
        elif method == b"HEAD":  # a HEAD answer has no body to frame it; the contract has no use for HEAD
            self._enqueue(
                None, _error(405, "HEAD is not supported; use GET /ping or POST /invocations"), keep
            )
        else:
            body = b"".join(self.body)
            head = b"".join(self.head)
            request = b"%s %s HTTP/1.1\r\n%s%s%d\r\n\r\n%s" % (
                method,
                self.url,
                head,
                REQUEST_TAIL,
                len(body),
                body,
            )
            self._enqueue(request, None, keep)
        self._reset()

    def _enqueue(self, request: bytes | None, answer: bytes | None, keep: bool) -> None:
        """Queue a request to relay (or an answer made here); requests on one connection go in order."""
        self.queue.append((request, answer, keep))
        if not self.busy:
            self.busy = True
            self.task = asyncio.ensure_future(self._drain())

    def _reject(self, status: int, message: str) -> None:
        if self.too_large:
            status, message = 413, f"payload exceeds the {MAX_PAYLOAD_BYTES}-byte limit"
            self.too_large = False
        self.transport.write(_error(status, message, close=True))
        self.transport.close()
        self.closing = True

    async def _drain(self) -> None:
        try:
            while self.queue and not self.closing:
                request, answer, client_keep = self.queue.popleft()
                upstream_keep = True
                if request is not None:
                    answer, upstream_keep = await self.front.forward(request)
                if self.closing:
                    return
                self.transport.write(answer)
                if not (client_keep and upstream_keep):
                    self.transport.close()
                    self.closing = True
        finally:
            self.busy = False
            if not self.parsing and not self.queue:  # nothing begun meanwhile: the keep-alive wait starts
                self.deadline = time.monotonic() + self.front.idle_timeout


class Watchdog(threading.Thread):
    """Replaces the active version's model server when its process is gone (in a thread: it waits on locks)."""

    def __init__(self, state_dir: Path, interval: float = WATCH_S) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.state_dir = state_dir
        self.interval = interval
        self.stopped = threading.Event()
        self.failures = 0

    def run(self) -> None:
        from mlops.serving import supervisor  # only here: the proxy itself needs none of it

        name, home = self.state_dir.name, self.state_dir.parent.parent
        pause = self.interval
        while not self.stopped.wait(pause):
            pause = self.interval
            if not (self.state_dir / "state.json").is_file():
                continue  # not started yet (or a test's bare state dir)
            try:
                new = supervisor.restart_dead_version(name, home=home, front_pid=os.getpid())
            except supervisor.EndpointError as err:
                self.failures += 1
                pause = min(RESTART_BACKOFF_MAX_S, 2.0**self.failures)
                log.error("watchdog: %s (next try in %.0fs)", err, pause)
                continue
            except Exception:  # never let the watchdog die: it is the endpoint's only repair
                log.exception("watchdog: unexpected error")
                continue
            if new is not None:
                self.failures = 0
                log.warning("watchdog: %s replaced by pid %d (%s)", new.version, new.process.pid, new.where)


async def run(
    state_dir: Path,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT_S,
    idle_timeout: float = IDLE_TIMEOUT_S,
    restart: bool = False,
) -> None:
    front = Front(state_dir, header_timeout=header_timeout, idle_timeout=idle_timeout)
    front.reload()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: ClientConnection(front), host, port, backlog=2048, reuse_address=True
    )
    watcher = asyncio.create_task(front.watch())
    sweeper = asyncio.create_task(front.sweep())
    watchdog = Watchdog(state_dir) if restart else None
    if watchdog is not None:
        watchdog.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.warning("front listening on %s:%d", host, port)
    await stop.wait()
    server.close()  # stop accepting; let requests in flight finish
    deadline = loop.time() + SHUTDOWN_GRACE_S
    while any(c.busy for c in front.connections) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    for conn in list(front.connections):
        conn.transport.close()
    if watchdog is not None:
        watchdog.stopped.set()
    for task in (watcher, sweeper):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Reverse proxy in front of a local endpoint's versions.")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    env = os.environ.get
    parser.add_argument(
        "--header-timeout", type=float, default=float(env("MLOPS_FRONT_HEADER_TIMEOUT_S", HEADER_TIMEOUT_S)),
        help=f"seconds a client has to send a request's headers (default {HEADER_TIMEOUT_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--idle-timeout", type=float, default=float(env("MLOPS_FRONT_IDLE_TIMEOUT_S", IDLE_TIMEOUT_S)),
        help=f"seconds an idle keep-alive connection stays open (default {IDLE_TIMEOUT_S:g})",
    )  # fmt: skip
    parser.add_argument(
        "--no-restart", dest="restart", action="store_false", default=env("MLOPS_FRONT_RESTART", "1") != "0",
        help="do not replace a model server whose process is gone",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.header_timeout <= 0 or args.idle_timeout <= 0:
        parser.error("--header-timeout and --idle-timeout must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s front: %(message)s")
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    try:
        asyncio.run(
            run(
                args.state_dir, args.host, args.port, header_timeout=args.header_timeout,
                idle_timeout=args.idle_timeout, restart=args.restart,
            )
        )  # fmt: skip
    except OSError as err:  # e.g. the port is taken
        log.critical("cannot listen on %s:%d: %s", args.host, args.port, err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
