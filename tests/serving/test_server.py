"""The model server over real HTTP: SageMaker's /ping and /invocations contract, errors, workers."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlops.serving.supervisor import free_port
from tests.project import ROOT as PROJECT_ROOT


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type", ""), resp.read()
    finally:
        conn.close()


def serve(model_dir: Path, workers: int):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlops.serving.server", "--model-dir", str(model_dir), "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            if request(port, "GET", "/ping")[0] == 200:
                return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not answer /ping")


def shutdown(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, 15)
    out, _ = proc.communicate(timeout=30)
    return out.decode()


@pytest.fixture(scope="module")
def sum_server(tmp_path_factory, make_model):
    model_dir = make_model(tmp_path_factory.mktemp("models"), "torch-sum")
    proc, port = serve(model_dir, workers=2)
    yield port, model_dir
    shutdown(proc)


@pytest.fixture(scope="module")
def flaky_server(tmp_path_factory, make_model):
    model_dir = make_model(tmp_path_factory.mktemp("models"), "flaky", "flaky")
    proc, port = serve(model_dir, workers=1)
    yield port
    shutdown(proc)


def test_ping_answers_200_once_the_model_is_loaded(sum_server):
    port, _ = sum_server
    assert request(port, "GET", "/ping")[0] == 200


@pytest.mark.parametrize(
    "body, content_type, accept, want_type, want_body",
    [
        (b"[1, 2, 3]", "application/json", None, "application/json", [6.0]),
        (b"[[1, 2], [3, 4.5]]", "application/json", "application/json", "application/json", [3.0, 7.5]),
        (b"1,2,3\n4,5,6\n", "text/csv", None, "application/json", [6.0, 15.0]),
        (b"1,2,3\n4,5,6\n", "text/csv; charset=utf-8", "text/csv", "text/csv", "6.0\n15.0\n"),
        (b"[1, 1]", "application/json", "text/csv, application/json", "text/csv", "2.0\n"),
    ],
)
def test_predictions_in_json_and_csv(sum_server, body, content_type, accept, want_type, want_body):
    port, _ = sum_server
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    status, ctype, payload = request(port, "POST", "/invocations", body, headers)
    assert status == 200, payload
    assert ctype.startswith(want_type)
    got = json.loads(payload) if want_type == "application/json" else payload.decode()
    assert got == want_body


@pytest.mark.parametrize(
    "body, content_type, status, message",
    [
        (b"[1, 2", "application/json", 400, "malformed application/json payload"),
        (b"\xff\xfe[1]", "application/json", 400, "malformed application/json payload"),
        (b"1,two,3", "text/csv", 400, "malformed text/csv payload"),
        (b"\x89PNG", "image/png", 415, "unsupported Content-Type 'image/png'"),
        (b"<a/>", "application/xml", 415, "unsupported Content-Type"),
        (b"[" + b"1," * (3_500_000) + b"1]", "application/json", 413, "exceeds the 6291456-byte limit"),
        (b"[1]", "application/json;accept=image/png", 406, "cannot produce Accept 'image/png'"),
    ],
    ids=["truncated-json", "not-utf8", "csv-word", "png", "xml", "7MB", "accept-png"],
)
def test_bad_requests_get_a_json_error_and_the_server_keeps_serving(
    sum_server, body, content_type, status, message
):
    port, _ = sum_server
    content_type, _, accept = content_type.partition(";accept=")
    headers = {"Content-Type": content_type, **({"Accept": accept} if accept else {})}
    got, ctype, payload = request(port, "POST", "/invocations", body, headers)
    assert got == status
    assert ctype == "application/json"
    assert message in json.loads(payload)["error"]
    assert (
        request(port, "POST", "/invocations", b"[2, 2]", {"Content-Type": "application/json"})[2] == b"[4.0]"
    )


def test_chunked_upload_over_the_limit_is_refused(sum_server):
    port, _ = sum_server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    chunks = (b"1," * 500_000 for _ in range(7))  # 7 MB, no Content-Length
    conn.request(
        "POST", "/invocations", body=chunks, headers={"Content-Type": "text/csv"}, encode_chunked=True
    )
    resp = conn.getresponse()
    assert resp.status == 413
    assert "exceeds" in json.loads(resp.read())["error"]
    conn.close()


def test_model_fn_runs_once_per_worker_not_per_request(sum_server):
    port, model_dir = sum_server
    loads = model_dir / "loads.log"
    deadline = time.monotonic() + 60  # /ping answers as soon as the first worker is up; wait for the second
    while len(loads.read_text().split()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    for _ in range(40):
        conn_status = request(port, "POST", "/invocations", b"[1]", {"Content-Type": "application/json"})[0]
        assert conn_status == 200
    pids = loads.read_text().split()
    assert len(pids) == 2 and len(set(pids)) == 2


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'"boom"', 500, "model error: RuntimeError: exploded on purpose"),
        (b'"bad"', 400, "invalid input: data must not be 'bad'"),
        (b"{nope", 400, "malformed application/json payload"),
    ],
)
def test_handler_errors_map_to_400_or_500_and_the_next_request_succeeds(flaky_server, body, status, message):
    got, _, payload = request(
        flaky_server, "POST", "/invocations", body, {"Content-Type": "application/json"}
    )
    assert got == status
    assert message in json.loads(payload)["error"]
    got, _, payload = request(
        flaky_server, "POST", "/invocations", b'{"x": 1}', {"Content-Type": "application/json"}
    )
    assert (got, json.loads(payload)) == (200, {"echo": {"x": 1}})


def test_custom_input_fn_can_reject_a_supported_type_as_malformed(flaky_server):
    got, _, payload = request(flaky_server, "POST", "/invocations", b"1,2", {"Content-Type": "text/csv"})
    assert got == 400 and "only JSON" in json.loads(payload)["error"]


@pytest.mark.parametrize(
    "method, path, status", [("GET", "/invocations", 405), ("POST", "/ping", 405), ("GET", "/nope", 404)]
)
def test_only_the_contract_routes_exist(flaky_server, method, path, status):
    assert request(flaky_server, method, path)[0] == status


@pytest.mark.parametrize(
    "files, message",
    [
        ({}, "code/inference.py: missing"),
        ({"code/inference.py": "x = 1\n"}, "defines no model_fn"),
        ({"code/inference.py": "import nonexistent_module_xyz\n"}, "import failed: ModuleNotFoundError"),
        (
            {"code/inference.py": "def model_fn(d):\n    raise OSError('no weights')\n"},
            "model_fn failed: OSError: no weights",
        ),
    ],
    ids=["no-code", "no-model-fn", "import-error", "model-fn-raises"],
)
def test_a_broken_model_dir_fails_at_load_with_the_reason(tmp_path, files, message):
    from mlops.serving.server import ModelLoadError, ModelService

    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelService(tmp_path).load()


DEEP = b"[" * 100_000 + b"]" * 100_000  # 200 kB: decoded in a worker thread, like any large body


@pytest.mark.parametrize("which", ["sum", "flaky"])
def test_a_deeply_nested_payload_is_a_400_not_a_500(sum_server, flaky_server, which):
    port = sum_server[0] if which == "sum" else flaky_server  # the default input_fn, then a custom one
    got, _, payload = request(port, "POST", "/invocations", DEEP, {"Content-Type": "application/json"})
    assert got == 400 and "nested too deeply" in json.loads(payload)["error"]
    assert request(port, "POST", "/invocations", b"[1]", {"Content-Type": "application/json"})[0] == 200


@pytest.mark.parametrize(
    "which, body",
    [("sum", b"[[1, NaN]]"), ("sum", b"[[1e308, 1e308]]"), ("flaky", b"NaN"), ("flaky", b"[-Infinity]")],
    ids=["default-nan", "default-overflow", "custom-nan", "custom-infinity"],
)
def test_a_non_finite_prediction_is_a_500_never_invalid_json(sum_server, flaky_server, which, body):
    port = sum_server[0] if which == "sum" else flaky_server
    got, ctype, payload = request(port, "POST", "/invocations", body, {"Content-Type": "application/json"})
    assert (got, ctype) == (500, "application/json")
    error = json.loads(payload, parse_constant=lambda c: pytest.fail(f"{c} in {payload!r}"))["error"]
    assert "model output is not valid JSON" in error and ("NaN" in error or "Infinity" in error)


def test_the_words_nan_and_infinity_inside_json_strings_pass(flaky_server):
    body = b'{"label": "NaN", "note": "Infinity and beyond"}'
    got, _, payload = request(
        flaky_server, "POST", "/invocations", body, {"Content-Type": "application/json"}
    )
    assert (got, json.loads(payload)) == (200, {"echo": {"label": "NaN", "note": "Infinity and beyond"}})
