"""The HTTP side of the serving containers' stand-ins (the built-in XGBoost server, the framework images'
handler server): routes, bodies, keep-alive, errors, and listening on 8080 and a Unix socket.

Standard library only, and Python 3.7 syntax: it runs in an image's own Python, mounted beside the script
that imports it (``import container_http`` from the script's directory; ``mlops.local.images.container_http``
in the toolkit).
"""

import os
import socketserver
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class HttpError(Exception):
    """A request the server answers with ``status`` and a one-line ``message``."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = " ".join(str(message).split())


class ListenError(Exception):
    """Nowhere to listen (the port or socket path is taken)."""


class ClientGone(Exception):
    """The client went away mid-request: nothing to answer."""


def handler_class(answer, *, name, limit, too_large, error_type, log, nodelay, on_done=None):
    """A keep-alive HTTP/1.1 handler whose every request is ``answer(method, path, headers, read_body)`` ->
    ``(status, content_type, body)``; ``read_body()`` reads the request's body (chunked or not) up to
    ``limit`` bytes, else raises :class:`HttpError` 413 with ``too_large``. An :class:`HttpError` is answered
    with its status and message as ``error_type``, any other exception with a 500 naming it.
    ``on_done(method, path, status, message_or_None, body_bytes, ms)`` hears of each answer. ``nodelay``:
    TCP_NODELAY, since the head and the body are two writes (not an option on a Unix socket)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length
        server_version = name
        timeout = 60  # an idle keep-alive connection is closed after this
        disable_nagle_algorithm = nodelay

        def version_string(self):
            return self.server_version

        def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
            pass  # each answer is reported through on_done

        def log_error(self, format, *args):  # noqa: A002
            log.warning("%s", " ".join((format % args).split()))

        def do_GET(self):
            self._dispatch("GET")

        def do_POST(self):
            self._dispatch("POST")

        def do_PUT(self):
            self._dispatch("PUT")

        def do_DELETE(self):
            self._dispatch("DELETE")

        def _has_body(self):
            chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
            return chunked or (self.headers.get("Content-Length") or "0").strip() != "0"

        def _read_body(self):
            try:
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    chunks, size = [], 0
                    while True:
                        n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if n == 0:
                            while self.rfile.readline().strip():  # trailers
                                pass
                            self.consumed = True
                            return b"".join(chunks)
                        size += n
                        if size > limit:
                            raise HttpError(413, too_large)
                        chunks.append(self.rfile.read(n))
                        self.rfile.readline()
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                except ValueError:
                    raise HttpError(400, "Bad Request: Content-Length is not a number") from None
                if length > limit:
                    raise HttpError(413, too_large)
                body = self.rfile.read(length) if length > 0 else b""
                if len(body) < length:
                    raise ClientGone(f"the body ended after {len(body)} of {length} bytes")
                self.consumed = True
                return body
            except (OSError, ValueError) as err:
                raise ClientGone(str(err)) from None

        def _dispatch(self, method):
            path = self.path.split("?", 1)[0]
            started = time.monotonic()
            self.consumed = False
            message = None
            try:
                status, content_type, body = answer(method, path, self.headers, self._read_body)
            except ClientGone as err:
                log.warning("%s %s: %s", method, path, " ".join(str(err).split()))
                self.close_connection = True
                return
            except HttpError as err:
                status, content_type, message = err.status, error_type, err.message
                body = message.encode("utf-8")
            except Exception as err:  # never a crash: the request gets a 500 naming the error
                status, content_type = 500, error_type
                message = " ".join(f"{type(err).__name__}: {err}".split())
                body = message.encode("utf-8")
            # a body left unread would be taken for the next request on this connection: close it
            close = not self.consumed and self._has_body()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                if status != 204:
                    self.send_header("Content-Length", str(len(body)))
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                if status != 204:
                    self.wfile.write(body)
            except OSError:
                self.close_connection = True
            if on_done is not None:
                on_done(method, path, status, message, len(body), (time.monotonic() - started) * 1000)

    return Handler


def routed(routes, answer_path):
    """``answer`` for :func:`handler_class` over ``routes`` (path -> method): 404 for another path, 405 for
    another method, else ``answer_path(path, headers, read_body)``."""

    def answer(method, path, headers, read_body):
        if path not in routes:
            raise HttpError(404, f"Not Found: {path}")
        if routes[path] != method:
            raise HttpError(405, f"Method Not Allowed: {method} {path}")
        return answer_path(path, headers, read_body)

    return answer


class _TCPServer(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self):  # without HTTPServer's getfqdn() of the address (a DNS lookup)
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def listen(make_handler, port, socket_path):
    """Servers on 0.0.0.0:``port`` and, if given, the Unix socket ``socket_path`` (a stale one replaced);
    ``make_handler(nodelay)`` gives each its handler class. Raises :class:`ListenError`."""
    servers = []
    try:
        servers.append(_TCPServer(("0.0.0.0", port), make_handler(True)))
    except OSError as err:
        raise ListenError(f"cannot listen on 0.0.0.0:{port}: {err.strerror or err}") from None
    if socket_path:
        try:
            if stat.S_ISSOCK(os.lstat(socket_path).st_mode):
                os.unlink(socket_path)
        except FileNotFoundError:
            pass
        try:
            servers.append(_UnixServer(socket_path, make_handler(False)))
        except OSError as err:
            servers[0].server_close()
            raise ListenError(f"cannot listen on unix:{socket_path}: {err.strerror or err}") from None
    return servers


def serve_until(stop, servers, socket_path, log):
    """Serve on ``servers`` until the event ``stop`` is set, then close them and remove the socket."""
    threads = [
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True) for s in servers
    ]
    for t in threads:
        t.start()
    while not stop.wait(0.5):
        pass
    log.info("stopping: SIGTERM")
    for s in servers:
        s.shutdown()
        s.server_close()
    if socket_path:
        try:
            os.unlink(socket_path)
        except OSError:
            pass
