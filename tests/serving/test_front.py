"""The endpoint's front (reverse proxy on the public port) over raw sockets: framing, limits, failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import pytest

from mlops.serving import supervisor


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory, make_model):
    home = tmp_path_factory.mktemp("mlops")
    model_dir = make_model(tmp_path_factory.mktemp("models"), "sum")
    info = supervisor.start_endpoint("front", model_dir, supervisor.free_port(), home=home, workers=1)
    yield info
    supervisor.stop_endpoint("front", home=home)


def exchange(port: int, raw: bytes, responses: int = 1) -> list[tuple[int, dict, bytes]]:
    """Send raw bytes, read ``responses`` HTTP responses (Content-Length framed) back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(raw)
        buf, out = b"", []
        while len(out) < responses:
            while b"\r\n\r\n" not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return out
                buf += chunk
            head, buf = buf.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:])
            length = int(headers["content-length"])
            while len(buf) < length:
                buf += sock.recv(65536)
            out.append((int(lines[0].split()[1]), headers, buf[:length]))
            buf = buf[length:]
        return out


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s"
        % (
            extra,
            len(body),
            body,
        )
    )


def test_pipelined_requests_are_answered_in_order(endpoint):
    raw = post(b"[1]") + post(b"[1, 1]") + post(b"[1, 1, 1]")
    answers = exchange(endpoint.port, raw, responses=3)
    assert [(s, b) for s, _, b in answers] == [(200, b"[1.0]"), (200, b"[2.0]"), (200, b"[3.0]")]


def test_chunked_request_body_is_reframed(endpoint):
    raw = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4\r\n1,2,\r\n2\r\n3\n\r\n0\r\n\r\n"
    )
    [(status, headers, body)] = exchange(endpoint.port, raw)
    assert (status, json.loads(body)) == (200, [6.0])
    assert headers["content-type"].startswith("application/json")


def test_expect_100_continue_is_not_passed_on(endpoint):
    [(status, _, body)] = exchange(endpoint.port, post(b"[4]", b"Expect: 100-continue\r\n"))
    assert (status, body) == (200, b"[4.0]")


@pytest.mark.parametrize(
    "raw, status, message",
    [
        (b"NOT HTTP AT ALL\r\n\r\n", 400, "malformed HTTP request"),
        (post(b"[" + b"1," * 3_200_000 + b"1]"), 413, "exceeds the 6291456-byte limit"),
        (
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"100000\r\n"
            + b"1" * 0x100000
            + b"\r\n"
            + (b"100000\r\n" + b"1" * 0x100000 + b"\r\n") * 6
            + b"0\r\n\r\n",
            413,
            "exceeds the 6291456-byte limit",
        ),
    ],
    ids=["garbage", "7MB", "7MB-chunked"],
)
def test_bad_framing(endpoint, raw, status, message):
    [(got, _, body)] = exchange(endpoint.port, raw)
    assert got == status and message in json.loads(body)["error"]
    assert exchange(endpoint.port, post(b"[2]"))[0][2] == b"[2.0]"


@pytest.mark.parametrize(
    "raw, status",
    [
        (b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /invocations HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"GET /nope?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"HEAD /invocations HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    ],
    ids=["ping", "get-invocations", "unknown-path", "head"],
)
def test_status_codes_pass_through(endpoint, raw, status):
    [(got, _, _)] = exchange(endpoint.port, raw)
    assert got == status


def test_a_dead_version_gives_502_with_the_reason_and_the_front_stays_up(tmp_path, make_model, monkeypatch):
    monkeypatch.setenv("MLOPS_FRONT_RESTART", "0")  # with its watchdog the front replaces the dead version
    home = tmp_path / "mlops"
    info = supervisor.start_endpoint(
        "dead", make_model(tmp_path, "sum"), supervisor.free_port(), home=home, workers=1
    )
    try:
        os.killpg(info.active.process.pid, signal.SIGKILL)
        while info.active.alive():
            time.sleep(0.02)
        [(status, _, body)] = exchange(info.port, post(b"[1]"))
        assert status == 502 and json.loads(body)["error"].startswith("model server ")
        assert info.front.alive()
    finally:
        supervisor.stop_endpoint("dead", home=home)
