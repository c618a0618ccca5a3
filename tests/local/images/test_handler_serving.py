"""A framework image's serving container running SAGEMAKER_PROGRAM (``handler_serving.py``): real processes,
real sockets, a real transform job on the scikit-learn image's own environment and a hosted endpoint on a
PyTorch image called through boto3.

The unit tests run ``python3 handler_serving.py`` as a plain script (cwd outside the project) with a tmp code
dir, on a free loopback port and a Unix socket; every wait is bounded and a server is killed if it does not
stop. ``MLOPS_HANDLER_TEST_PYTHONS`` (interpreters separated by os.pathsep, e.g. an image env's Python 3.7
with numpy) runs the contract tests on those too.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mlops.local.images import handler_serving
from mlops.local.images.launch import serving_launch
from mlops.local.runtime import JobRequestError
from mlops.local.runtime.transform import run_transform_job
from tests.archives import targz
from tests.local.conftest import runtime

SCRIPT = Path(handler_serving.__file__)
HTTP_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
OTHER_PYTHONS = [p for p in os.environ.get("MLOPS_HANDLER_TEST_PYTHONS", "").split(os.pathsep) if p]
PYTHONS = [sys.executable, *OTHER_PYTHONS]
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


# ---------------------------------------------------------------- helpers


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = HTTP_TIMEOUT_S):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, socket_path: str, work: Path):
        self.proc, self.port, self.socket_path, self.work = proc, port, socket_path, work

    def connection(self, via: str = "tcp") -> http.client.HTTPConnection:
        if via == "unix":
            return UnixHTTPConnection(self.socket_path)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)

    def request(self, method, path, body=None, headers=None, via="tcp", conn=None):
        """(status, headers, body bytes); ``conn`` to reuse a keep-alive connection."""
        c = conn or self.connection(via)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            if conn is None:
                c.close()

    def invoke(self, body, content_type="application/json", accept=None, via="tcp", conn=None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        if accept is not None:
            headers["Accept"] = accept
        data = body.encode() if isinstance(body, str) else body
        return self.request("POST", "/invocations", data, headers, via=via, conn=conn)

    def log(self) -> str:
        return (self.work / "stderr.log").read_text()


def code_dir(root: Path, files: dict[str, str]) -> Path:
    code = root / "code"
    code.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (code / name).write_text(textwrap.dedent(text))
    return code


def server_env(model_dir: Path, port: int, socket_path: str, extra: dict | None) -> dict:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SM_", "PYTEST_", "PYTHONPATH", "SAGEMAKER_"))
    }
    env = {**base, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port),
           "MLOPS_SERVING_SOCKET": socket_path, "SAGEMAKER_PROGRAM": "inference.py"}  # fmt: skip
    return {**env, **(extra or {})}


def launch(code: Path, model_dir: Path, framework="generic", env=None, python=sys.executable):
    """The script as a plain process; returns (proc, port, socket path, work dir) without waiting."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="hsrv", dir="/tmp"))  # short: a socket path has a 107-byte limit
    socket_path = str(work / "s.sock")
    with open(work / "stderr.log", "w") as err:
        proc = subprocess.Popen(
            [python, str(SCRIPT), "--framework", framework, "--code-dir", str(code)],
            env=server_env(model_dir, port, socket_path, env), cwd=work, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    return Server(proc, port, socket_path, work)


def stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
    return server.proc.returncode


def start(code: Path, model_dir: Path, framework="generic", env=None, python=sys.executable) -> Server:
    server = launch(code, model_dir, framework, env, python)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.proc.poll() is not None:
            text = server.log()
            shutil.rmtree(server.work, ignore_errors=True)
            raise AssertionError(f"the server exited {server.proc.returncode}: {text}")
        try:
            if server.request("GET", "/ping")[0] == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            text = server.log()
            shutil.rmtree(server.work, ignore_errors=True)
            raise AssertionError(f"no /ping within {START_TIMEOUT_S} s: {text}")
        time.sleep(0.05)


@contextmanager
def serving(code: Path, model_dir: Path, framework="generic", env=None, python=sys.executable):
    server = start(code, model_dir, framework, env, python)
    try:
        yield server
    finally:
        stop(server)
        shutil.rmtree(server.work, ignore_errors=True)


def fails_to_start(code: Path, model_dir: Path, framework="generic", env=None) -> tuple[int, str]:
    """(exit code, log) of a server that must exit before it serves."""
    server = launch(code, model_dir, framework, env)
    try:
        code_ = server.proc.wait(timeout=START_TIMEOUT_S)
        return code_, server.log()
    finally:
        stop(server)
        shutil.rmtree(server.work, ignore_errors=True)


def npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array))
    return buf.getvalue()


# ---------------------------------------------------------------- the handler contract

# Every handler, and a sibling module: the code dir is first on sys.path.
FULL = {
    "scale.py": "FACTOR = 10\n",
    "inference.py": """
        import json, os
        from scale import FACTOR

        def model_fn(model_dir):
            with open(os.environ["LOADS_FILE"], "a") as f:
                f.write("load\\n")
            return float(open(os.path.join(model_dir, "offset.txt")).read())

        def input_fn(input_data, content_type):
            assert isinstance(input_data, str), type(input_data)  # JSON arrives decoded from UTF-8
            return {"rows": json.loads(input_data), "type": content_type}

        def predict_fn(data, model):
            return [x * FACTOR + model for x in data["rows"]]

        def output_fn(prediction, accept):
            if accept == "text/csv":
                return "\\n".join(str(p) for p in prediction) + "\\n", "text/csv"
            return json.dumps({"predictions": prediction}), "application/json"
    """,
}


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "offset.txt").write_text("0.5")
    return d


@pytest.mark.parametrize("python", PYTHONS)
def test_the_scripts_handlers_serve_over_tcp_and_the_unix_socket_with_one_model_load(
    tmp_path, model_dir, python
):
    loads = tmp_path / "loads.txt"
    code = code_dir(tmp_path, FULL)
    with serving(code, model_dir, env={"LOADS_FILE": str(loads)}, python=python) as s:
        status, headers, body = s.request("GET", "/ping")
        assert status == 200 and json.loads(body) == {"status": "Healthy"}  # MMS / TorchServe's answer
        for via in ("tcp", "unix"):
            conn = s.connection(via)
            try:  # keep-alive: several requests on one connection
                for _ in range(3):
                    status, headers, body = s.invoke("[1, 2]", conn=conn)
                    assert status == 200, body
                    assert headers["Content-Type"] == "application/json"
                    assert int(headers["Content-Length"]) == len(body)
                    assert json.loads(body) == {"predictions": [10.5, 20.5]}
            finally:
                conn.close()
        status, headers, body = s.invoke("[3]", accept="text/csv", via="unix")
        assert (status, headers["Content-Type"], body) == (200, "text/csv", b"30.5\n")
    assert loads.read_text() == "load\n"  # model_fn ran once, before the server listened


def test_transform_fn_takes_the_raw_body_and_its_types(tmp_path, model_dir):
    code = code_dir(tmp_path, {"inference.py": """
        def model_fn(model_dir):
            return "m"

        def transform_fn(model, data, content_type, accept):
            kind = type(data).__name__
            return "{}|{}|{}|{}|{}".format(model, kind, len(data), content_type, accept), "text/plain"
    """})  # fmt: skip
    with serving(code, model_dir) as s:
        # NPY is not a UTF-8 type: the body arrives as bytes; no Accept is the default one
        status, headers, body = s.invoke(b"\x93NUMPY", "application/x-npy")
        assert (status, headers["Content-Type"]) == (200, "text/plain")
        assert body == b"m|bytes|6|application/x-npy|application/json"
        status, _, body = s.invoke("1,2", "text/csv", accept="*/*")
        assert body == b"m|str|3|text/csv|application/json"
        # only exactly "text/csv" is decoded: with parameters the body stays bytes, the type as sent
        status, _, body = s.invoke("1,2", "text/csv; charset=utf-8", accept="text/csv")
        assert body == b"m|bytes|3|text/csv; charset=utf-8|text/csv"


def test_a_handler_that_takes_one_more_parameter_gets_the_context(tmp_path, model_dir):
    code = code_dir(tmp_path, {"inference.py": """
        def model_fn(model_dir, context):
            return context.system_properties["model_dir"]

        def predict_fn(data, model, context):
            return {"model_dir": model, "n": len(data)}
    """})  # fmt: skip
    with serving(code, model_dir) as s:
        status, _, body = s.invoke("[1, 2, 3]")
        assert status == 200 and json.loads(body) == {"model_dir": str(model_dir), "n": 3}


# A script that only predicts: the defaults decode and encode.
DOUBLE = {
    "inference.py": """
    def model_fn(model_dir):
        return 2

    def predict_fn(data, model):
        return data * model
"""
}


@pytest.mark.parametrize("python", PYTHONS)
def test_the_default_handlers_decode_and_encode_json_csv_and_npy(tmp_path, model_dir, python):
    code = code_dir(tmp_path, DOUBLE)
    with serving(code, model_dir, python=python) as s:
        status, headers, body = s.invoke("[[1, 2], [3, 4]]")
        assert (status, headers["Content-Type"]) == (200, "application/json")
        assert json.loads(body) == [[2, 4], [6, 8]]
        # CSV: numpy.genfromtxt in, numpy.savetxt(fmt="%s") out
        status, headers, body = s.invoke("1,2\n3,4\n", "text/csv", accept="text/csv")
        assert (status, headers["Content-Type"], body) == (200, "text/csv", b"2.0,4.0\n6.0,8.0\n")
        # NPY both ways, dtype kept
        status, headers, body = s.invoke(npy(np.arange(6, dtype=np.int32).reshape(2, 3)), "application/x-npy",
                                         accept="application/x-npy")  # fmt: skip
        assert (status, headers["Content-Type"]) == (200, "application/x-npy")
        got = np.load(io.BytesIO(body))
        assert got.dtype == np.int32 and got.tolist() == [[0, 2, 4], [6, 8, 10]]
        # the first type of the Accept list that has an encoder
        status, headers, body = s.invoke("[1]", accept="application/foo, text/csv")
        assert (status, headers["Content-Type"], body) == (200, "text/csv", b"2\n")


def test_sagemaker_default_invocations_accept_answers_no_accept_and_any(tmp_path, model_dir):
    code = code_dir(tmp_path, DOUBLE)
    with serving(code, model_dir, env={"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "text/csv"}) as s:
        for accept in (None, "*/*"):
            status, headers, body = s.invoke("[1, 2]", accept=accept)
            assert (status, headers["Content-Type"], body) == (200, "text/csv", b"2\n4\n"), accept
        assert json.loads(s.invoke("[1, 2]", accept="application/json")[2]) == [2, 4]


ERRORS = {
    "inference.py": """
    import json

    class BadInput(Exception):  # what sagemaker_inference.errors.GenericInferenceToolkitError carries
        def __init__(self, status_code, message):
            super().__init__(message)
            self.status_code, self.message = status_code, message

    def model_fn(model_dir):
        return None

    def input_fn(data, content_type):
        if content_type == "application/x-reject":
            raise BadInput(400, "rows must be numbers")
        return json.loads(data)

    def predict_fn(data, model):
        if data == "boom":
            raise RuntimeError("the model broke")
        return data
"""
}


@pytest.mark.parametrize(
    "content_type, body, accept, status, words",
    [
        # sagemaker-inference turns every handler error into a 500, unsupported types included (no 415/406)
        ("application/json", '"boom"', None, 500, "RuntimeError: the model broke"),
        ("application/json", "[1", None, 500, "JSONDecodeError"),
        ("application/x-reject", "x", None, 400, "rows must be numbers"),  # the error's own status_code
    ],
    ids=["predict-error", "bad-json", "status-code"],
)
def test_handler_errors_get_their_status_and_one_line(tmp_path, model_dir, content_type, body, accept, status,
                                                      words):  # fmt: skip
    code = code_dir(tmp_path, ERRORS)
    with serving(code, model_dir) as s:
        got, headers, text = s.invoke(body, content_type, accept=accept)
        assert got == status and words in text.decode(), text
        assert b"\n" not in text
        assert s.invoke("[1]")[0] == 200  # the server answers afterwards
        time.sleep(0.2)
        failures = [line for line in s.log().splitlines() if "ERROR" in line]
    assert len(failures) == 1 and f"POST /invocations {status}" in failures[0], failures


def test_unsupported_types_protocol_errors_and_the_payload_limit(tmp_path, model_dir):
    code = code_dir(tmp_path, DOUBLE)
    with serving(code, model_dir, env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1"}) as s:
        status, _, body = s.invoke("x", "application/foo")
        assert status == 500 and b"Content type application/foo is not supported by this framework" in body
        status, _, body = s.invoke("[1]", accept="application/foo")
        assert status == 500 and b"Content type application/foo is not supported by this framework" in body
        assert s.request("GET", "/nope")[0] == 404
        assert s.request("GET", "/invocations")[0] == 405
        # over SAGEMAKER_MAX_PAYLOAD_IN_MB: 413 from the Content-Length, before the body is read, and that
        # connection is closed (its unread body would be taken for the next request), not the server
        with socket.create_connection(("127.0.0.1", s.port), timeout=HTTP_TIMEOUT_S) as raw:
            raw.sendall(b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n[1" % (2**20 + 1))  # fmt: skip
            answer = b""
            while True:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0].decode()
        assert head.startswith("HTTP/1.1 413 ") and "Connection: close" in head, answer
        assert s.invoke("[1]")[0] == 200


def test_execution_parameters_are_the_images_defaults_or_the_scripts(tmp_path, model_dir):
    code = code_dir(tmp_path, DOUBLE)
    with serving(code, model_dir, env={"SAGEMAKER_MAX_PAYLOAD_IN_MB": "20"}) as s:
        status, headers, body = s.request("GET", "/execution-parameters")
        assert (status, headers["Content-Type"]) == (200, "application/json")
        assert json.loads(body) == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD",
                                    "MaxPayloadInMB": 20}  # fmt: skip
    own = {"inference.py": textwrap.dedent(DOUBLE["inference.py"]) + textwrap.dedent("""
        def execution_parameters_fn():
            return {"MaxConcurrentTransforms": 3, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 2}
    """)}  # fmt: skip
    with serving(code_dir(tmp_path / "own", own), model_dir, "sklearn") as s:
        assert json.loads(s.request("GET", "/execution-parameters")[2])["BatchStrategy"] == "SINGLE_RECORD"


def test_tcp_answers_are_not_held_back_by_nagle(tmp_path, model_dir):
    """Headers and body are two writes: without TCP_NODELAY each answer waits ~40 ms for a delayed ACK."""
    code = code_dir(tmp_path, DOUBLE)
    with serving(code, model_dir) as s:
        conn = s.connection()
        try:
            s.invoke("[1]", conn=conn)  # warm: numpy imported
            times = []
            for _ in range(15):
                t0 = time.perf_counter()
                assert s.invoke("[1]", conn=conn)[0] == 200
                times.append(time.perf_counter() - t0)
        finally:
            conn.close()
    assert statistics.median(times) < 0.02, times


def test_sigterm_stops_serving_exits_0_and_removes_the_socket(tmp_path, model_dir):
    code = code_dir(tmp_path, DOUBLE)
    server = start(code, model_dir)
    try:
        conn = server.connection("unix")
        assert server.invoke("[1]", conn=conn)[0] == 200  # a keep-alive connection stays open
        assert stop(server) == 0
        conn.close()
        assert not os.path.exists(server.socket_path)
        assert server.log().splitlines()[-1].endswith("stopping: SIGTERM")
    finally:
        stop(server)
        shutil.rmtree(server.work, ignore_errors=True)


@pytest.mark.parametrize(
    "files, framework, last",
    [
        ({"inference.py": "def model_fn(d):\n    raise OSError('no weights in ' + d[-5:])\n"}, "generic",
         "ModelLoadError: model_fn of inference.py failed: OSError: no weights in model"),
        ({"inference.py": "import not_installed_anywhere\n"}, "generic",
         "ModelLoadError: importing inference.py failed: ModuleNotFoundError: No module named "
         "'not_installed_anywhere'"),
        ({"inference.py": "def model_fn(d):\n    return 1\ndef transform_fn(m, d, c, a):\n    pass\n"
                          "def input_fn(d, c):\n    pass\n"}, "generic",
         "ModelLoadError: inference.py: Cannot use transform_fn implementation in conjunction with input_fn, "
         "predict_fn, and/or output_fn implementation"),
        ({"inference.py": "def predict_fn(d, m):\n    return d\n"}, "sklearn",
         "ModelLoadError: the default model_fn of inference.py failed: NotImplementedError: Please provide a "
         "model_fn implementation."),
        ({"other.py": ""}, "sklearn", "ModelLoadError: SAGEMAKER_PROGRAM inference.py is not in"),
    ],
    ids=["model-fn-raises", "import-error", "transform-fn-and-input-fn", "no-model-fn", "no-program"],
)  # fmt: skip
def test_a_model_that_cannot_load_exits_1_with_the_error_as_its_last_line(tmp_path, model_dir, files, framework,
                                                                          last):  # fmt: skip
    code, log = fails_to_start(code_dir(tmp_path, files), model_dir, framework)
    lines = log.strip().splitlines()
    assert code == 1, log
    assert lines[-1].startswith(last), lines[-3:]
    if last.startswith("ModelLoadError: model_fn of"):  # the script's traceback comes first
        assert any('inference.py", line 2, in model_fn' in line for line in lines), log


# ---------------------------------------------------------------- the frameworks' own defaults


def test_sklearn_defaults_cast_csv_to_float32_predict_and_answer_the_accept_as_given(tmp_path, model_dir):
    code = code_dir(tmp_path, {"inference.py": """
        class Model:
            def predict(self, x):
                return (x.sum(axis=1) if x.ndim == 2 else x * 0) if str(x.dtype) == "float32" else None

        def model_fn(model_dir):
            return Model()
    """})  # fmt: skip
    with serving(code, model_dir, "sklearn") as s:
        status, headers, body = s.invoke("1,2\n3,4.5\n", "text/csv", accept="text/csv")
        # sagemaker-containers' csv encoder: a 1-D prediction is one column; Flask adds the charset
        assert (status, headers["Content-Type"], body) == (200, "text/csv; charset=utf-8", b"3.0\n7.5\n")
        status, headers, body = s.invoke("[[1, 2], [3, 4]]")
        assert (status, headers["Content-Type"], json.loads(body)) == (200, "application/json", [3.0, 7.0])
        # the Accept is taken exactly as given: a list of types has no encoder (500, as the image)
        assert s.invoke("[[1, 2]]", accept="text/csv, application/json")[0] == 500
        # no Content-Type: JSON, as sagemaker-containers' Request
        assert json.loads(s.invoke("[[1, 1]]", None)[2]) == [2.0]
        # a user error is never given its own status on this stack
        assert s.invoke("x", "application/foo")[0] == 500


def test_sklearn_script_results_answer_as_flask_would(tmp_path, model_dir):
    code = code_dir(tmp_path, {"inference.py": """
        class Response:  # what sagemaker_containers.beta.framework.worker.Response looks like
            def __init__(self, body, status, mimetype):
                self.body, self.status_code, self.mimetype = body, status, mimetype
            def get_data(self):
                return self.body.encode()

        def model_fn(model_dir):
            return None

        def transform_fn(model, data, content_type, accept):
            if data == "[0]":
                return "zero"
            if data == "[1]":
                return {"one": 1}
            return Response("nope", 422, "text/plain")
    """})  # fmt: skip
    with serving(code, model_dir, "sklearn") as s:
        assert s.invoke("[0]")[1]["Content-Type"] == "text/html; charset=utf-8"
        status, headers, body = s.invoke("[1]")
        assert (status, headers["Content-Type"], json.loads(body)) == (200, "application/json", {"one": 1})
        status, headers, body = s.invoke("[2]")
        assert (status, headers["Content-Type"], body) == (422, "text/plain; charset=utf-8", b"nope")
        assert s.request("GET", "/ping")[2] == b""  # sagemaker-containers' ping: an empty 200


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_pytorch_defaults_load_torchscript_and_answer_tensors(tmp_path, model_dir):
    import torch

    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
        net.bias.copy_(torch.tensor([0.0, 0.5]))
    torch.jit.script(net).save(str(model_dir / "model.pt"))
    code = code_dir(tmp_path, {"inference.py": "# every handler is the PyTorch toolkit's default\n"})
    with serving(code, model_dir, "pytorch") as s:
        status, headers, body = s.invoke("[[1, 2, 3]]")
        assert (status, headers["Content-Type"], json.loads(body)) == (200, "application/json", [[1.0, 6.5]])
        status, headers, body = s.invoke(npy(np.array([[0, 0, 1]], dtype=np.float32)), "application/x-npy",
                                         accept="text/csv")  # fmt: skip
        assert (status, headers["Content-Type"], body) == (200, "text/csv", b"0.0,1.5\n")


def test_xgboost_defaults_read_csv_and_libsvm_into_a_dmatrix(tmp_path, model_dir):
    import xgboost as xgb

    x = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0]] * 10)
    booster = xgb.train({"max_depth": 2, "eta": 1.0}, xgb.DMatrix(x, label=x[:, 0] * 2), num_boost_round=4)
    booster.save_model(str(model_dir / "xgboost-model.json"))
    code = code_dir(tmp_path, {"inference.py": """
        import os, xgboost

        def model_fn(model_dir):
            booster = xgboost.Booster()
            booster.load_model(os.path.join(model_dir, "xgboost-model.json"))
            return booster
    """})  # fmt: skip
    want = booster.predict(xgb.DMatrix(x[:2]))
    with serving(code, model_dir, "xgboost") as s:
        status, _, body = s.invoke("0,1\n1,0\n", "text/csv", accept="application/json")
        assert status == 200, body
        np.testing.assert_allclose(json.loads(body), want, rtol=1e-6)
        status, _, body = s.invoke("0 1:0 2:1\n0 1:1 2:0", "text/libsvm; charset=utf-8", accept="text/csv")
        assert status == 200, body
        np.testing.assert_allclose([float(v) for v in body.split()], want, rtol=1e-6)
        status, _, body = s.invoke("[[0, 1]]", "application/json")  # JSON has no XGBoost decoder
        assert status == 500 and b"Content type application/json is not supported" in body


# ---------------------------------------------------------------- launches


def test_a_framework_image_with_sagemaker_program_launches_the_handler_server(tmp_path):
    env = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/code/sourcedir.tar.gz"}
    got = serving_launch({"Image": SKLEARN_IMAGE, "Environment": env}, tmp_path)
    assert got.kind == "handlers-program"
    assert got.argv[1:] == ["/opt/mlops/images/handler_serving.py", "--framework", "sklearn", "--code-dir",
                            "/opt/ml/code"]  # fmt: skip
    assert got.mounts == [("/opt/mlops/images/handler_serving.py", SCRIPT),  # and the HTTP side it imports
                          ("/opt/mlops/images/container_http.py", SCRIPT.with_name("container_http.py"))]  # fmt: skip
    repacked = {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}
    assert serving_launch({"Image": PYTORCH_IMAGE, "Environment": repacked}, tmp_path).argv[2:] == [
        "--framework", "pytorch", "--code-dir", "/opt/ml/model/code"]  # fmt: skip
    xgb_image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
    no_submit = {"SAGEMAKER_PROGRAM": "inference.py"}
    assert serving_launch({"Image": xgb_image, "Environment": no_submit}, tmp_path).argv[2:] == [
        "--framework", "xgboost", "--code-dir", "/opt/ml/model/code"]  # fmt: skip
    # without SAGEMAKER_PROGRAM, built-in XGBoost and code/inference.py keep their launches
    assert serving_launch({"Image": xgb_image}, tmp_path).kind == "algorithm"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text("")
    assert serving_launch({"Image": PYTORCH_IMAGE}, tmp_path).kind == "handlers"
    # TensorFlow Serving has its own contract; a custom image runs what it runs
    tfs = "763104351884.dkr.ecr.us-east-1.amazonaws.com/tensorflow-inference:2.11-cpu"
    assert serving_launch({"Image": tfs, "Environment": no_submit}, tmp_path).kind == "handlers"
    assert serving_launch({"Image": "local/serving:1", "Environment": no_submit}, tmp_path).kind == "handlers"


# ---------------------------------------------------------------- a transform job on the sklearn image

# Trained in the image's own environment (scikit-learn 1.2.1, Python 3.9): the joblib pickle the container
# loads is the one that environment wrote, so no pickle crosses scikit-learn versions.
TRAIN = """
import json, sys
import joblib, numpy as np, sklearn
from sklearn.linear_model import LinearRegression

x = np.array([[i, (i * 7) % 5] for i in range(40)], dtype=float)
model = LinearRegression().fit(x, 3 * x[:, 0] - 2 * x[:, 1] + 1)
joblib.dump(model, sys.argv[1])
rows = np.array(json.loads(sys.argv[2]), dtype=np.float32)  # the default input_fn casts CSV to float32
print(json.dumps({"sklearn": sklearn.__version__, "predictions": model.predict(rows).tolist()}))
"""

SKLEARN_INFERENCE = """
import os, sys
import joblib, sklearn
from names import MODEL_FILE  # a sibling module of the source dir

def model_fn(model_dir):
    print("model_fn on scikit-learn %s, Python %d.%d" % (sklearn.__version__, *sys.version_info[:2]), file=sys.stderr)
    return joblib.load(os.path.join(model_dir, MODEL_FILE))
"""


@pytest.fixture(scope="module")
def sklearn_env():
    from mlops.local.images import environments as envs

    try:
        return envs.prepare(envs.choose(SKLEARN_IMAGE))
    except envs.ImageEnvError as err:
        pytest.skip(f"no environment for the scikit-learn image here: {err}")


def transform_request(**overrides):
    req = {
        "ModelName": "sk",
        "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}},
                           "ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"S3OutputPath": "s3://b/out", "AssembleWith": "Line", "Accept": "text/csv"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "BatchStrategy": "MultiRecord", "MaxPayloadInMB": 1,
    }  # fmt: skip
    req.update(overrides)
    return req


SOURCEDIR = "s3://b/code/sourcedir.tar.gz"
SK_MODEL = {"ModelName": "sk", "PrimaryContainer": {
    "Image": SKLEARN_IMAGE, "ModelDataUrl": "s3://b/model/model.tar.gz",
    "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": SOURCEDIR},
}}  # fmt: skip


@pytest.mark.slow  # the first run builds the image's environment (uv, PyPI: about a minute)
def test_a_transform_job_serves_a_sklearn_model_with_the_scripts_model_fn_in_the_images_env(
    store, tmp_path, mode, sklearn_env
):
    rows = [[[r, (r * 3) % 4] for r in range(n)] for n in (30, 5)]
    out = subprocess.run(
        [str(sklearn_env.python), "-I", "-c", TRAIN, str(tmp_path / "model.joblib"),
         json.dumps([row for part in rows for row in part])],
        capture_output=True, text=True, timeout=300, cwd="/",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    trained = json.loads(out.stdout)
    assert trained["sklearn"] == "1.2.1"
    store.put_bytes(
        "s3://b/model/model.tar.gz", targz({"model.joblib": (tmp_path / "model.joblib").read_bytes()})
    )
    store.put_bytes(
        SOURCEDIR, targz({"inference.py": SKLEARN_INFERENCE, "names.py": "MODEL_FILE = 'model.joblib'\n"})
    )
    for i, part in enumerate(rows):
        store.put_bytes(f"s3://b/in/part-{i}.csv", "".join(f"{a},{b}\n" for a, b in part).encode())
    lines = []
    res = run_transform_job(
        transform_request(), job_name="sk-1", store=store, job_dir=tmp_path / "job", model=SK_MODEL,
        on_log=lambda host, line: lines.append(line),
    )  # fmt: skip
    assert res.status == "Completed", (res.failure_reason, lines[-20:])
    got = []
    for i in range(len(rows)):
        got += [float(v) for v in store.path(f"s3://b/out/part-{i}.csv.out").read_text().split()]
    np.testing.assert_allclose(got, trained["predictions"], rtol=1e-6)
    want = "serving with the sagemaker-scikit-learn 1.2-1 handlers of inference.py in /opt/ml/code"
    assert any(want in line for line in lines)
    assert any("model_fn on scikit-learn 1.2.1, Python 3.9" in line for line in lines)  # the image's env
    # the source dir was unpacked beside the model, mounted read-only
    assert (tmp_path / "job" / "model-sourcedir" / "names.py").is_file()


def test_a_submit_directory_missing_from_the_store_is_refused_before_start(store, tmp_path, bwrap_mode):
    store.put_bytes("s3://b/model/model.tar.gz", targz({"model.joblib": b"x"}))
    store.put_bytes("s3://b/in/part-0.csv", b"1,2\n")
    with pytest.raises(
        JobRequestError, match=r"SAGEMAKER_SUBMIT_DIRECTORY s3://b/code/sourcedir\.tar\.gz is not in"
    ):
        run_transform_job(
            transform_request(), job_name="sk-2", store=store, job_dir=tmp_path / "job", model=SK_MODEL
        )


# ---------------------------------------------------------------- a hosted endpoint on a PyTorch image

PYTORCH_INFERENCE = """
import json, os
import torch
from net import Net  # a sibling module in code/

def model_fn(model_dir):
    net = Net()
    net.load_state_dict(torch.load(os.path.join(model_dir, "weights.pt")))
    return net
"""

NET = """
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, x):
        if (x < 0).any():
            raise ValueError("negative input")
        return self.linear(x)
"""


def test_a_pytorch_endpoint_serves_sagemaker_program_from_the_model_code_dir(hosting, tmp_path):
    import torch

    from mlops.local.hosting.endpoints import IN_SERVICE

    hosting, store, url = hosting
    torch.manual_seed(0)
    state = {"linear.weight": torch.tensor([[2.0, -1.0]]), "linear.bias": torch.tensor([0.5])}
    buf = io.BytesIO()
    torch.save(state, buf)
    store.put_bytes("s3://b/pt/model.tar.gz", targz({"weights.pt": buf.getvalue(), "code/inference.py": PYTORCH_INFERENCE,
                                                     "code/net.py": NET}))  # fmt: skip
    model = {"ModelName": "pt", "PrimaryContainer": {
        "Image": PYTORCH_IMAGE, "ModelDataUrl": "s3://b/pt/model.tar.gz",
        "Environment": {"SAGEMAKER_PROGRAM": "inference.py", "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"},
    }}  # fmt: skip
    config = {"EndpointConfigName": "pt-config",
              "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "pt", "InitialInstanceCount": 1}]}  # fmt: skip
    hosting.create_endpoint("pt", config, {"pt": model})
    assert hosting.wait("pt", 180) == IN_SERVICE, hosting.describe_endpoint("pt")
    client = runtime(url)
    # the PyTorch toolkit's default input_fn, predict_fn (no_grad, eval) and output_fn
    res = client.invoke_endpoint(EndpointName="pt", Body="[[1, 2], [3, 1]]", ContentType="application/json")
    assert res["ContentType"] == "application/json"
    assert json.loads(res["Body"].read()) == [[0.5], [5.5]]
    res = client.invoke_endpoint(EndpointName="pt", Body="1,1\n", ContentType="text/csv", Accept="text/csv")
    assert res["ContentType"] == "text/csv" and res["Body"].read() == b"1.5\n"
    with pytest.raises(client.exceptions.ModelError) as err:
        client.invoke_endpoint(EndpointName="pt", Body="[[-1, 0]]", ContentType="application/json")
    assert err.value.response["OriginalStatusCode"] == 500
    assert "ValueError: negative input" in err.value.response["OriginalMessage"]
    # the served model is this variant's container running the handler server
    launch = hosting._endpoints["pt"].variants["AllTraffic"].served[0].launch
    assert launch.kind == "handlers-program" and "--framework" in launch.argv and "pytorch" in launch.argv


def test_a_pytorch_endpoint_whose_model_fn_fails_names_the_error(hosting):
    hosting, store, _ = hosting
    bad = "def model_fn(model_dir):\n    raise OSError('no weights here')\n"
    store.put_bytes("s3://b/bad.tar.gz", targz({"code/inference.py": bad}))
    model = {"ModelName": "bad", "PrimaryContainer": {"Image": PYTORCH_IMAGE, "ModelDataUrl": "s3://b/bad.tar.gz",
                                                      "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}}  # fmt: skip
    config = {
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "bad", "InitialInstanceCount": 1}]
    }
    hosting.create_endpoint("bad", config, {"bad": model})
    assert hosting.wait("bad", 120) == "Failed"
    reason = hosting.describe_endpoint("bad")["FailureReason"]
    assert "no weights here" in reason or "exited during startup" in reason, reason
    # the container's own last line names the script's error (the reason quotes the log's last line, which
    # may be the container runner's exit line)
    log_path = re.search(r"\(log: (\S+)\)", reason).group(1)
    container_lines = [ln for ln in Path(log_path).read_text().splitlines() if not ln.startswith("[mlops]")]
    assert container_lines[-1].endswith(
        "ModelLoadError: model_fn of inference.py failed: OSError: no weights here"
    ), container_lines[-5:]
