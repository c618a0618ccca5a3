"""The front's header and idle timeouts over real sockets on 127.0.0.1 (timeouts of 1 s, 50 slow clients)."""

from __future__ import annotations

import json
import socket
import time

import pytest

from mlops.serving import front, supervisor
from tests.serving.conftest import make_model_dir
from tests.serving.test_front import exchange, post

TIMEOUT_S = 1.0
SLOW_CLIENTS = 50

SLOW_INFERENCE = """
import json
import time


def model_fn(model_dir):
    return "model"


def input_fn(body, content_type):
    return json.loads(body)


def predict_fn(data, model):
    if data == "slow":
        time.sleep(2.5)  # longer than both of the front's timeouts
    return {"echo": data}


def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlops")
    model_dir = make_model_dir(tmp_path_factory.mktemp("models"), "slow", SLOW_INFERENCE)
    with pytest.MonkeyPatch.context() as mp:  # the front reads its timeouts from the environment it starts in
        mp.setenv("MLOPS_FRONT_HEADER_TIMEOUT_S", str(TIMEOUT_S))
        mp.setenv("MLOPS_FRONT_IDLE_TIMEOUT_S", str(TIMEOUT_S))
        info = supervisor.start_endpoint("timeouts", model_dir, supervisor.free_port(), home=home, workers=1)
    yield info
    supervisor.stop_endpoint("timeouts", home=home)


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the front sends until it closes the connection, and how long that took."""
    started, data = time.monotonic(), b""
    sock.settimeout(limit_s)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def echo(value) -> bytes:
    return post(json.dumps(value).encode())


def test_the_defaults_are_sane():
    assert (front.HEADER_TIMEOUT_S, front.IDLE_TIMEOUT_S) == (10.0, 60.0)


def test_slow_header_clients_are_closed_and_normal_requests_are_answered_meanwhile(endpoint):
    slow = [connect(endpoint.port) for _ in range(SLOW_CLIENTS)]
    try:
        started = time.monotonic()
        for sock in slow:  # a partial request header, then nothing: slowloris
            sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: appl")
        for i in range(5):  # the front keeps answering everyone else
            [(status, _, body)] = exchange(endpoint.port, echo(i))
            assert (status, json.loads(body)) == (200, {"echo": i})
        assert time.monotonic() - started < TIMEOUT_S  # answered before the slow ones were dropped
        for sock in slow:
            data, _ = read_until_closed(sock, limit_s=5 * TIMEOUT_S)
            assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"connection: close" in data
        elapsed = time.monotonic() - started
        assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 3.0
    finally:
        for sock in slow:
            sock.close()
    [(status, _, _)] = exchange(endpoint.port, echo("after"))
    assert status == 200


def test_a_connection_that_sends_nothing_is_closed_quietly(endpoint):
    with connect(endpoint.port) as sock:
        data, waited = read_until_closed(sock, limit_s=5 * TIMEOUT_S)
    assert data == b"" and TIMEOUT_S * 0.9 <= waited < TIMEOUT_S + 2.0


def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not(endpoint):
    with connect(endpoint.port) as sock:
        for i in range(6):  # one request every 0.4 s for over 2 timeouts: never idle for long
            sock.sendall(echo(i))
            head = b""
            while b'"echo": %d}' % i not in head:
                chunk = sock.recv(65536)
                assert chunk, f"closed during request {i}"
                head += chunk
            assert head.startswith(b"HTTP/1.1 200")
            time.sleep(0.4 * TIMEOUT_S)
        data, waited = read_until_closed(sock, limit_s=5 * TIMEOUT_S)
    assert data == b"" and waited < TIMEOUT_S + 2.0


def test_a_slow_body_is_cut_but_a_slow_answer_is_not(endpoint):
    with connect(endpoint.port) as sock:  # headers complete, then the body stops coming
        sock.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n[1,")
        data, _ = read_until_closed(sock, limit_s=5 * TIMEOUT_S)
    assert data.startswith(b"HTTP/1.1 408")
    started = time.monotonic()
    [(status, _, body)] = exchange(endpoint.port, echo("slow"))  # 2.5 s in the model: past both timeouts
    assert (status, json.loads(body)) == (200, {"echo": "slow"})
    assert time.monotonic() - started >= 2.0
