"""Local endpoint supervision with real detached processes: lifecycle, failures, blue/green under traffic."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time

import pytest

from mlops.serving import supervisor
from mlops.serving.supervisor import EndpointError, EndpointNotFound


def answers(url: str) -> bool:
    """Whether a version's own URL (a port, or a sandboxed server's Unix socket) still answers."""
    try:
        supervisor.post(url, b"[1]", timeout=2)
    except EndpointError:
        return False
    return True


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def predict(port: int, row: list[float]) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", "/invocations", json.dumps(row), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    return json.loads(resp.read())[0]


def test_start_list_invoke_logs_stop(home, sum_model):
    info = supervisor.start_endpoint("digits", sum_model, supervisor.free_port(), home=home, workers=1)
    assert info.status == "InService" and info.active.version == "sum-v1"

    [listed] = supervisor.list_endpoints(home=home)
    assert (listed.name, listed.status, listed.port) == ("digits", "InService", info.port)
    assert listed.front.alive() and listed.active.alive()
    state = json.loads((home / "endpoints" / "digits" / "state.json").read_text())
    assert state["active"]["model_dir"] == str(sum_model) and state["port"] == info.port

    result = supervisor.invoke("digits", b"1,2,3\n", "text/csv", home=home)
    assert (result.status, json.loads(result.body)) == (200, [6.0])
    bad = supervisor.invoke("digits", b"[1,", home=home)
    assert bad.status == 400 and "malformed" in json.loads(bad.body)["error"]
    huge = supervisor.invoke("digits", b"[" + b"1," * 3_500_000 + b"1]", home=home)  # 7 MB, via the front
    assert huge.status == 413 and "6291456-byte limit" in json.loads(huge.body)["error"]
    assert supervisor.invoke("digits", b"[1, 1]", home=home).body == b"[2.0]"

    assert any("loaded model" in line for line in supervisor.endpoint_logs("digits", home=home))
    assert any(
        "forwards to" in line for line in supervisor.endpoint_logs("digits", home=home, source="front")
    )

    stopped = supervisor.stop_endpoint("digits", home=home)
    assert stopped.status == "Stopped"
    assert not info.front.alive() and not info.active.alive()
    assert not port_open(info.port) and not port_open(info.active.port)
    assert supervisor.list_endpoints(home=home)[0].status == "Stopped"
    with pytest.raises(EndpointError, match="is Stopped, not InService"):
        supervisor.invoke("digits", b"[1]", home=home)


def test_start_returns_once_every_worker_has_loaded_the_model(home, sum_model):
    info = supervisor.start_endpoint("two", sum_model, supervisor.free_port(), home=home, workers=2)
    log = supervisor.endpoint_logs("two", home=home, lines=200)  # read at once: no waiting for a late worker
    pids = re.findall(r"model_fn pid (\d+)", "\n".join(log))
    assert len(pids) == 2 and len(set(pids)) == 2
    assert sorted(p.name for p in (home / "endpoints" / "two" / "blue.ready").iterdir()) == sorted(pids)
    assert info.active.workers == 2


def test_a_second_start_is_refused_and_a_killed_server_shows_as_failed(home, sum_model, monkeypatch):
    monkeypatch.setenv("MLOPS_FRONT_RESTART", "0")  # the front's watchdog would replace it (see test_restart)
    info = supervisor.start_endpoint("e", sum_model, supervisor.free_port(), home=home, workers=1)
    with pytest.raises(EndpointError, match="already in service"):
        supervisor.start_endpoint("e", sum_model, supervisor.free_port(), home=home, workers=1)
    os.killpg(info.active.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while supervisor.get_endpoint("e", home=home).status != "Failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert supervisor.get_endpoint("e", home=home).status == "Failed"
    # A failed endpoint can be started again: the leftover front is stopped first.
    again = supervisor.start_endpoint("e", sum_model, info.port, home=home, workers=1)
    assert not info.front.alive() and again.front.alive()
    assert supervisor.invoke("e", b"[5]", home=home).body == b"[5.0]"


@pytest.mark.parametrize(
    "files, workers, message",
    [
        ({}, 1, r"code/inference.py is missing"),
        (
            {"code/inference.py": "def model_fn(d):\n    raise OSError('weights gone')\n"},
            1,
            r"OSError: weights gone",
        ),
        (
            {"code/inference.py": "def model_fn(d):\n    raise OSError('weights gone')\n"},
            2,
            r"OSError: weights gone",
        ),
        ({"code/inference.py": "import json.nonexistent_xyz\n"}, 2, r"import failed: ModuleNotFoundError"),
    ],
    ids=["no-inference-py", "model-fn-raises", "model-fn-raises-2-workers", "import-error"],
)
def test_a_model_that_cannot_start_gives_the_reason_and_leaves_nothing_running(
    home, tmp_path, files, workers, message
):
    model_dir = tmp_path / "broken"
    model_dir.mkdir()
    for rel, text in files.items():
        (model_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (model_dir / rel).write_text(text)
    port = supervisor.free_port()
    with pytest.raises(EndpointError, match=message) as err:
        supervisor.start_endpoint("broken", model_dir, port, home=home, workers=workers, timeout=30)
    assert "\n" not in str(err.value)
    assert not port_open(port)
    assert supervisor.list_endpoints(home=home) == []


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda h: supervisor.stop_endpoint("ghost", home=h), EndpointNotFound, "'ghost': not found"),
        (lambda h: supervisor.endpoint_logs("ghost", home=h), EndpointNotFound, "not found"),
        (lambda h: supervisor.invoke("ghost", b"[1]", home=h), EndpointNotFound, "not found"),
        (lambda h: supervisor.get_endpoint("bad/name", home=h), EndpointError, "letters, digits"),
        (lambda h: supervisor.start_endpoint("x", h / "nowhere", 8080, home=h), EndpointError, "is missing"),
        (
            lambda h: supervisor.start_endpoint("x", h, 8080, home=h, variant="red"),
            EndpointError,
            "not one of",
        ),
        (lambda h: supervisor.deploy_blue_green("x", h, print, home=h), EndpointError, "is missing"),
    ],
    ids=["stop", "logs", "invoke", "bad-name", "no-model-dir", "bad-variant", "bg-no-model"],
)
def test_bad_requests_to_the_supervisor(home, call, error, message):
    with pytest.raises(error, match=message):
        call(home)
    assert not (home / "endpoints").exists() or not any((home / "endpoints").iterdir())


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda h, m: supervisor.start_endpoint("x", m, 8080, home=h, workers=0), "workers must be >= 1"),
        (
            lambda h, m: supervisor.deploy_blue_green("x", m, print, home=h),
            "does not exist yet: give the public port",
        ),
    ],
    ids=["no-workers", "new-endpoint-without-port"],
)
def test_bad_arguments_with_a_good_model_dir(home, sum_model, call, message):
    with pytest.raises(EndpointError, match=message):
        call(home, sum_model)
    assert supervisor.list_endpoints(home=home) == [] and not (home / "endpoints").exists()


def test_a_busy_port_is_refused(home, sum_model):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(EndpointError, match="already in use"):
            supervisor.start_endpoint("e", sum_model, busy.getsockname()[1], home=home, workers=1)


class Traffic(threading.Thread):
    """A client that keeps sending requests to the public port and records every answer."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port, self.answers, self.failures = port, [], []
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop.is_set():
            try:
                conn.request("POST", "/invocations", b"[1, 2]", {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200:
                    self.answers.append(json.loads(body)[0])
                else:
                    self.failures.append((resp.status, body))
            except (OSError, http.client.HTTPException) as err:
                self.failures.append(repr(err))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)


@pytest.mark.slow
def test_blue_green_switches_versions_without_a_failed_request(home, tmp_path, make_model):
    v1 = make_model(tmp_path / "m", "v1", offset=0)
    v2 = make_model(tmp_path / "m", "v2", offset=100)
    first = supervisor.start_endpoint("bg", v1, supervisor.free_port(), home=home, workers=2)
    clients = [Traffic(first.port) for _ in range(3)]  # several, so requests are in flight at the switch
    for client in clients:
        client.start()
    smoked = []

    def smoke(url: str) -> None:
        smoked.append(url)
        assert supervisor.post(url, b"[1, 2]").body == b"[103.0]"

    result = supervisor.deploy_blue_green("bg", v2, smoke, home=home, workers=2)
    time.sleep(0.5)
    for client in clients:
        client.stop.set()
        client.join()

    assert (result.status, result.reason) == ("Succeeded", "")
    assert smoked == [result.endpoint.active.url] and result.endpoint.active.variant == "green"
    for client in clients:
        assert client.failures == []
        assert client.answers[0] == 3.0 and client.answers[-1] == 103.0
        switch = client.answers.index(103.0)  # each client sees the old version, then only the new one
        assert set(client.answers[:switch]) == {3.0} and set(client.answers[switch:]) == {103.0}
    assert not first.active.alive()  # the old version was drained and stopped
    assert result.endpoint.port == first.port and predict(first.port, [0]) == 100.0
    history = [(d.version, d.status) for d in supervisor.get_endpoint("bg", home=home).deployments]
    assert history == [("v1", "Succeeded"), ("v2", "Succeeded")]


def test_blue_green_failed_smoke_test_rolls_back_and_the_old_version_keeps_answering(
    home, tmp_path, make_model
):
    v1 = make_model(tmp_path / "m", "v1", offset=0)
    v2 = make_model(tmp_path / "m", "v2", offset=100)
    first = supervisor.start_endpoint("bg", v1, supervisor.free_port(), home=home, workers=1)
    traffic = Traffic(first.port)
    traffic.start()
    candidates = []

    def smoke(url: str) -> None:
        candidates.append(url)
        assert supervisor.post(url, b"[1, 2]").body == b"[103.0]"  # the candidate really answered
        raise AssertionError("accuracy 0.12 is below the floor 0.85")

    result = supervisor.deploy_blue_green("bg", v2, smoke, home=home, workers=1)
    traffic.stop.set()
    traffic.join()
    assert traffic.failures == [] and set(traffic.answers) == {3.0}  # clients only ever saw the old version

    assert result.status == "RolledBack"
    assert result.reason == "smoke test failed: AssertionError: accuracy 0.12 is below the floor 0.85"
    assert not answers(candidates[0])  # the candidate was stopped
    now = supervisor.get_endpoint("bg", home=home)
    assert now.status == "InService" and now.active.version == "v1" and first.active.alive()
    assert predict(first.port, [1, 2]) == 3.0
    last = now.deployments[-1]
    assert (last.version, last.status, last.reason) == ("v2", "RolledBack", result.reason)


def test_blue_green_onto_a_new_endpoint_and_a_version_that_cannot_start(home, tmp_path, make_model):
    v1 = make_model(tmp_path / "m", "v1", offset=0)
    port = supervisor.free_port()
    result = supervisor.deploy_blue_green("fresh", v1, lambda url: None, port=port, home=home, workers=1)
    assert result.status == "Succeeded" and predict(port, [2]) == 2.0

    broken = tmp_path / "m" / "broken"
    (broken / "code").mkdir(parents=True)
    (broken / "code" / "inference.py").write_text("def model_fn(d):\n    raise MemoryError('too big')\n")
    result = supervisor.deploy_blue_green("fresh", broken, lambda url: None, home=home, workers=1, timeout=30)
    assert (
        result.status == "RolledBack"
        and "new version did not start" in result.reason
        and "too big" in result.reason
    )
    assert predict(port, [2]) == 2.0
