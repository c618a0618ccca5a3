"""SageMaker's built-in XGBoost algorithm, ``serve`` mode: real models, real processes, real sockets.

Each model is trained by the script's own ``train`` mode (as ``test_xgboost_algorithm.py`` runs it); each
server is ``python3 xgboost_algorithm.py serve --image <uri>`` run as a plain script, on a free loopback port
and a Unix socket (``MLOPS_SERVING_SOCKET``). Every wait is bounded: processes, connections and the wait for
``/ping`` all have timeouts, and a server is killed if it does not stop.
"""

from __future__ import annotations

import ast
import csv
import http.client
import io
import json
import math
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from tests.local.images.test_xgboost_algorithm import SCRIPT, binary, csv_text, make_job, regression, run

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:{}"
CSV_CONFIG = {"ContentType": "text/csv", "TrainingInputMode": "File", "S3DistributionType": "FullyReplicated"}
HTTP_TIMEOUT_S = 20.0
START_TIMEOUT_S = 60.0


# ---------------------------------------------------------------- helpers


class UnixHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection over a Unix socket (the path MLOPS_SERVING_SOCKET names)."""

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


def short_dir() -> Path:
    """A dir for the Unix socket: pytest's tmp paths can pass the 107-byte limit of a socket's path."""
    return Path(tempfile.mkdtemp(prefix="xgbs", dir="/tmp"))


def rows_csv(x, delimiter=",") -> str:
    """Feature rows as a request body: no label column; repr() so the server parses the same float64."""
    return "\n".join(delimiter.join("" if math.isnan(v) else repr(float(v)) for v in row) for row in x)


def rows_libsvm(x) -> str:
    """Every feature written (a libsvm row omits only missing values): ``<label> <index>:<value> ...``."""
    return "\n".join("0 " + " ".join(f"{j}:{float(v)!r}" for j, v in enumerate(row)) for row in x)


def train_model(root: Path, hps: dict, y, x, image: str, validation=None) -> Path:
    channels = {"train": (CSV_CONFIG, {"train.csv": csv_text(y, x)})}
    if validation is not None:
        channels["validation"] = (CSV_CONFIG, {"validation.csv": csv_text(*validation)})
    env = make_job(root, hps, channels)
    proc = run(env, "--image", image)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return Path(env["SM_MODEL_DIR"])


def load(model_dir: Path, name: str = "xgboost-model") -> xgb.Booster:
    """The model file as SageMaker's developer guide loads it: a pickle, else Booster.load_model."""
    path = model_dir / name
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception:
        bst = xgb.Booster()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            bst.load_model(str(path))
        return bst


def expected(bst: xgb.Booster, x) -> np.ndarray:
    return bst.predict(xgb.DMatrix(np.asarray(x, dtype=float)))


def numbers_csv(text: str) -> np.ndarray:
    """A text/csv response: a row per record."""
    return np.array([[float(v) for v in line.split(",")] for line in text.splitlines()])


def close(a, b, tol=1e-6) -> bool:
    """Equal structure, numbers within ``tol`` (NaN equals NaN)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return (
            isinstance(b, list)
            and len(a) == len(b)
            and all(close(u, v, tol) for u, v in zip(a, b, strict=True))
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, int) and isinstance(b, int):
        return type(a) is type(b) and a == b
    return abs(float(a) - float(b)) <= tol


class Server:
    """A running ``serve`` process and how to reach it."""

    def __init__(self, proc: subprocess.Popen, port: int, socket_path: str | None, stderr_path: Path):
        self.proc, self.port, self.socket_path, self.stderr_path = proc, port, socket_path, stderr_path

    def connection(self, via: str = "tcp") -> http.client.HTTPConnection:
        if via == "unix":
            return UnixHTTPConnection(self.socket_path)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=HTTP_TIMEOUT_S)

    def request(self, method, path, body=None, headers=None, via="tcp", conn=None):
        """(status, headers, body text); ``conn`` to reuse a keep-alive connection."""
        c = conn or self.connection(via)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read().decode()
        finally:
            if conn is None:
                c.close()

    def invoke(self, body, content_type="text/csv", accept=None, via="tcp", conn=None):
        headers = {} if content_type is None else {"Content-Type": content_type}
        if accept is not None:
            headers["Accept"] = accept
        return self.request("POST", "/invocations", body.encode() if isinstance(body, str) else body, headers,
                            via=via, conn=conn)  # fmt: skip

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def serve_env(model_dir: Path, port: int, socket_path: str | None, extra: dict | None = None) -> dict:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SM_", "PYTEST_", "PYTHONPATH", "SAGEMAKER_"))
    }
    env = {**base, "SM_MODEL_DIR": str(model_dir), "SAGEMAKER_BIND_TO_PORT": str(port)}
    if socket_path:
        env["MLOPS_SERVING_SOCKET"] = socket_path
    return {**env, **(extra or {})}


def start(
    model_dir: Path,
    image: str | None,
    extra_env: dict | None = None,
    socket_path: str | None = None,
    python: str = sys.executable,
):
    """Starts ``serve`` as a plain script (cwd outside the project) and waits for /ping; returns a Server."""
    port = free_port()
    work = short_dir()
    socket_path = socket_path or str(work / "s.sock")
    stderr_path = work / "stderr.log"
    args = [python, str(SCRIPT), "serve"] + (["--image", image] if image else [])
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            args, env=serve_env(model_dir, port, socket_path, extra_env), cwd=work, stdout=subprocess.PIPE,
            stderr=err, text=True,
        )  # fmt: skip
    server = Server(proc, port, socket_path, stderr_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            stop(server)
            text = server.stderr()
            shutil.rmtree(work, ignore_errors=True)
            raise AssertionError(f"serve exited {proc.returncode}: {text}")
        try:
            if server.request("GET", "/ping")[0] == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(server)
            text = server.stderr()
            shutil.rmtree(work, ignore_errors=True)
            raise AssertionError(f"serve did not answer /ping within {START_TIMEOUT_S} s: {text}")
        time.sleep(0.1)


def stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(timeout=10)
    server.proc.stdout.close()
    return server.proc.returncode


@contextmanager
def serving(model_dir: Path, image: str | None, extra_env: dict | None = None, python: str = sys.executable):
    server = start(model_dir, image, extra_env, python=python)
    try:
        yield server
    finally:
        stop(server)
        shutil.rmtree(Path(server.stderr_path).parent, ignore_errors=True)


# ---------------------------------------------------------------- models and servers shared by the module


def multiclass(n=300, seed=2):
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(n, 3)), 4)
    y = np.digitize(x[:, 0] + 0.3 * x[:, 1], [-0.5, 0.5])
    return y, x


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Model dirs trained by the script: regression with 1.7-1 and 1.0-1, softprob, binary."""
    root = tmp_path_factory.mktemp("models")
    y, x = regression()
    yb, xb = binary()
    ym, xm = multiclass()
    reg = {"num_round": "10", "max_depth": "3"}
    return {
        "reg-1.7-1": train_model(root / "reg17", reg, y, x, IMAGE.format("1.7-1")),
        "reg-1.0-1": train_model(root / "reg10", reg, y, x, IMAGE.format("1.0-1-cpu-py3")),
        "softprob": train_model(
            root / "softprob", {"num_round": "8", "objective": "multi:softprob", "num_class": "3"}, ym, xm,
            IMAGE.format("1.7-1"),
        ),
        "binary": train_model(
            root / "binary", {"num_round": "8", "objective": "binary:logistic"}, yb, xb, IMAGE.format("1.7-1")
        ),
    }  # fmt: skip


@pytest.fixture(scope="module")
def server(models):
    with serving(models["reg-1.7-1"], IMAGE.format("1.7-1")) as s:
        yield s


X = regression()[1][:25]


# ---------------------------------------------------------------- predictions


@pytest.mark.parametrize(
    "content_type, body, x",
    [
        ("text/csv", rows_csv(X), X),
        ("text/csv; charset=utf-8", rows_csv(X), X),  # the charset parameter is ignored
        ("csv", rows_csv(X), X),  # data_utils.get_content_type takes the bare word too
        ("text/csv", rows_csv(X, "\t"), X),  # the delimiter is sniffed from the first line
        ("text/csv", rows_csv(X) + "\r\n", X),  # the payload is stripped
        ("text/csv", rows_csv(np.where(X > 1.5, np.nan, X)), np.where(X > 1.5, np.nan, X)),  # empty = missing
        ("text/libsvm", rows_libsvm(X), X),
        ("text/x-libsvm", rows_libsvm(X), X),
        (None, rows_libsvm(X), X),  # no Content-Type: libsvm, as data_utils.get_content_type
    ],
    ids=[
        "csv",
        "csv-charset",
        "csv-bare",
        "tab",
        "trailing-newline",
        "missing-values",
        "libsvm",
        "x-libsvm",
        "no-content-type",
    ],  # fmt: skip
)
def test_predictions_equal_the_boosters_on_the_same_rows(server, models, content_type, body, x):
    status, headers, text = server.invoke(body, content_type)
    assert status == 200, text
    assert headers["Content-Type"] == "text/csv; charset=utf-8"
    got = numbers_csv(text)
    assert got.shape == (len(x), 1)
    np.testing.assert_allclose(got[:, 0], expected(load(models["reg-1.7-1"]), x), rtol=0, atol=1e-6)


@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_the_tcp_port_and_the_unix_socket_serve_the_same_model_with_keep_alive(server, models, via):
    want = expected(load(models["reg-1.7-1"]), X)
    conn = server.connection(via)
    try:
        for _ in range(3):  # one connection, several requests (HTTP/1.1 keep-alive, Content-Length)
            status, headers, text = server.invoke(rows_csv(X), conn=conn)
            assert status == 200, text
            assert int(headers["Content-Length"]) == len(text.encode())
            np.testing.assert_allclose(numbers_csv(text)[:, 0], want, rtol=0, atol=1e-6)
        assert server.request("GET", "/ping", conn=conn)[:1] == (200,)
    finally:
        conn.close()


@pytest.mark.parametrize(
    "accept, kind",
    [
        (None, "csv"),  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT, text/csv when unset
        ("*/*", "csv"),
        ("text/csv", "csv"),
        ("TEXT/CSV", "csv"),
        ("application/json", "json"),
        ("application/json;verbose=True", "json"),  # parameters are dropped (serve._parse_accept)
    ],
)
def test_the_response_follows_accept(server, models, accept, kind):
    status, headers, text = server.invoke(rows_csv(X[:4]), accept=accept)
    assert status == 200, text
    want = expected(load(models["reg-1.7-1"]), X[:4])
    if kind == "json":
        assert headers["Content-Type"] == "application/json"
        body = json.loads(text)
        assert list(body) == ["predictions"] and all(list(p) == ["score"] for p in body["predictions"])
        np.testing.assert_allclose([p["score"] for p in body["predictions"]], want, rtol=0, atol=1e-6)
    else:
        assert headers["Content-Type"] == "text/csv; charset=utf-8" and text.endswith("\n")
        np.testing.assert_allclose(numbers_csv(text)[:, 0], want, rtol=0, atol=1e-6)


def test_multi_class_softprob_answers_a_row_of_probabilities_per_record(models):
    _, xm = multiclass()
    want = expected(load(models["softprob"]), xm[:6])
    assert want.shape == (6, 3)
    with serving(models["softprob"], IMAGE.format("1.7-1")) as s:
        status, _, text = s.invoke(rows_csv(xm[:6]))
        assert status == 200, text
        np.testing.assert_allclose(numbers_csv(text), want, rtol=0, atol=1e-6)
        status, _, text = s.invoke(rows_csv(xm[:6]), accept="application/json")
        scores = [p["score"] for p in json.loads(text)["predictions"]]
        np.testing.assert_allclose(np.array(scores), want, rtol=0, atol=1e-6)


def test_execution_parameters_as_the_image_reports_them(server):
    status, headers, text = server.request("GET", "/execution-parameters")
    assert status == 200 and headers["Content-Type"] == "application/json"
    params = json.loads(text)
    assert params["BatchStrategy"] == "MULTI_RECORD" and params["MaxPayloadInMB"] == 6
    assert params["MaxConcurrentTransforms"] >= 1


# ---------------------------------------------------------------- what the server refuses

GOOD = rows_csv(X[:2])


@pytest.mark.parametrize(
    "method, path, content_type, accept, body, status, message",
    [
        # decoding fails: 415, as serve.invocations answers parse_content_data's errors
        ("POST", "/invocations", "text/csv", None, "1.0,abc,3,4", 415, "Loading csv data failed"),
        ("POST", "/invocations", "text/csv", None, "1,2,3,4\n1,2", 415, "different numbers of fields"),
        ("POST", "/invocations", "text/libsvm", None, "0 a:b", 415, "Loading libsvm data failed"),
        ("POST", "/invocations", "application/json", None, "[[1, 2, 3, 4]]", 415,
         "Content-type application/json is not supported."),
        ("POST", "/invocations", "application/x-parquet", None, "PAR1", 415, "is not supported"),
        ("POST", "/invocations", "application/x-recordio-protobuf", None, "\n\x0b", 415,
         "application/x-recordio-protobuf"),
        ("POST", "/invocations", "text/csv; label_size=2", None, GOOD, 415, "label_size must be equal to 1"),
        # the model cannot evaluate it: 400
        ("POST", "/invocations", "text/csv", None, "1,2,3,4,5\n1,2,3,4,5", 400,
         "Unable to evaluate payload provided"),
        ("POST", "/invocations", "text/libsvm", None, "0 0:1 9:2", 400, "Unable to evaluate payload provided"),
        # Accept: 406 for a type the image does not know; 500 for one it lists but cannot encode without
        # selectable content (sagemaker-containers' encoders.encode has no jsonlines encoder)
        ("POST", "/invocations", "text/csv", "text/libsvm", GOOD, 406, "Accept type text/libsvm is not supported"),
        ("POST", "/invocations", "text/csv", "application/jsonlines", GOOD, 500,
         "Content type application/jsonlines is not supported by this framework."),
        ("POST", "/invocations", "text/csv", None, "", 204, ""),
        ("GET", "/invocations", None, None, None, 405, "Method Not Allowed"),
        ("POST", "/ping", "text/csv", None, GOOD, 405, "Method Not Allowed"),
        ("GET", "/nowhere", None, None, None, 404, "Not Found"),
    ],
    ids=["unparseable-number", "ragged-rows", "bad-libsvm", "json-content", "parquet", "recordio", "label-size",
         "too-many-features", "libsvm-index-past-the-model", "accept-libsvm", "accept-jsonlines", "empty",
         "get-invocations", "post-ping", "unknown-path"],  # fmt: skip
)  # fmt: skip
def test_bad_requests_get_a_status_and_one_line_and_the_server_answers_afterwards(
    server, models, method, path, content_type, accept, body, status, message
):
    headers = {} if content_type is None else {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    conn = server.connection()
    try:
        got, response_headers, text = server.request(method, path, body, headers, conn=conn)
        assert got == status, text
        assert message in text and "\n" not in text
        if response_headers.get("Connection") == "close":
            conn.close()
            conn = server.connection()
        # the same connection (or a new one) still gets predictions
        ok, _, predictions = server.invoke(GOOD, conn=conn)
        assert ok == 200, predictions
        np.testing.assert_allclose(
            numbers_csv(predictions)[:, 0], expected(load(models["reg-1.7-1"]), X[:2]), rtol=0, atol=1e-6
        )
    finally:
        conn.close()


def test_a_payload_over_max_content_length_is_413_and_closes_only_that_connection(models):
    with serving(models["reg-1.7-1"], IMAGE.format("1.7-1"), {"MAX_CONTENT_LENGTH": "100"}) as s:
        body = rows_csv(X[:10])
        assert len(body) > 100
        status, headers, text = s.invoke(body)
        assert status == 413 and "MAX_CONTENT_LENGTH" in text and headers.get("Connection") == "close"
        assert s.invoke(rows_csv(X[:1]))[0] == 200


# ---------------------------------------------------------------- model formats and image versions


@pytest.mark.parametrize(
    "trained_by, served_as, format_word, legacy",
    [
        ("reg-1.0-1", "1.0-1-cpu-py3", "pickled Booster", True),
        ("reg-1.7-1", "1.0-1-cpu-py3", "Booster.load_model", True),
        ("reg-1.0-1", "1.7-1", "pickled Booster", False),
    ],
    ids=["pickle-as-1.0-1", "save_model-as-1.0-1", "pickle-as-1.7-1"],
)
def test_either_model_format_loads_whatever_the_image_version(
    models, trained_by, served_as, format_word, legacy
):
    """Before 1.3-1 the algorithm pickles the Booster; serve tries the version's format, then the other.
    Before 1.2-2 the image answers text/csv on one line, comma-separated, whatever the Accept."""
    model_dir = models[trained_by]
    with open(model_dir / "xgboost-model", "rb") as f:
        assert (f.read(1) == b"\x80") is (trained_by == "reg-1.0-1")  # a pickle starts with PROTO
    want = expected(load(model_dir), X[:5])
    with serving(model_dir, IMAGE.format(served_as)) as s:
        status, headers, text = s.invoke(rows_csv(X[:5]), accept="application/json")
        assert status == 200, text
        if legacy:
            assert headers["Content-Type"] == "text/csv; charset=utf-8" and "\n" not in text
            got = np.array([float(v) for v in text.split(",")])
        else:
            got = np.array([p["score"] for p in json.loads(text)["predictions"]])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        loaded = [ln for ln in s.stderr().splitlines() if "model loaded" in ln]
    assert len(loaded) == 1 and format_word in loaded[0] and f"xgboost {xgb.__version__}" in loaded[0], loaded


def test_a_pickle_trained_with_early_stopping_predicts_with_its_best_iteration(tmp_path):
    """The 1.0-1 algorithm keeps every tree after early stopping; the image predicts with the pickled
    Booster's best_ntree_limit."""
    y, x = regression(n=300, seed=3)
    hps = {"num_round": "200", "eta": "0.9", "max_depth": "8", "early_stopping_rounds": "2",
           "eval_metric": "rmse"}  # fmt: skip
    model_dir = train_model(tmp_path / "es", hps, y[:100], x[:100], IMAGE.format("1.0-1"), (y[100:], x[100:]))
    bst = load(model_dir)
    best = int(bst.attr("best_iteration"))
    assert best < bst.num_boosted_rounds() - 1  # it stopped early and kept the later trees
    rows = x[100:120]
    at_best = bst.predict(xgb.DMatrix(rows), iteration_range=(0, best + 1))
    assert not np.allclose(at_best, bst.predict(xgb.DMatrix(rows)), atol=1e-6)
    with serving(model_dir, IMAGE.format("1.0-1")) as s:
        status, _, text = s.invoke(rows_csv(rows))
    assert status == 200, text
    np.testing.assert_allclose([float(v) for v in text.split(",")], at_best, rtol=0, atol=1e-6)


@pytest.mark.parametrize("ensemble, mean", [(None, True), ("false", False)], ids=["default", "disabled"])
def test_every_file_in_the_model_dir_is_an_ensemble_unless_disabled(tmp_path, models, ensemble, mean):
    """SAGEMAKER_INFERENCE_ENSEMBLE (default true, 1.2-2 on): the mean of every model file's predictions;
    dotfiles are skipped."""
    model_dir = tmp_path / "model"
    shutil.copytree(models["reg-1.7-1"], model_dir)
    y, x = regression(seed=5)
    other = xgb.train({"max_depth": 2, "eta": 0.5}, xgb.DMatrix(x, label=y * 2), 6)
    other.save_model(str(model_dir / "another-model.json"))
    (model_dir / ".DS_Store").write_bytes(b"\x00\x01 not a model")
    first = expected(load(models["reg-1.7-1"]), X[:5])
    want = (first + expected(other, X[:5])) / 2 if mean else first
    extra = {"SAGEMAKER_INFERENCE_ENSEMBLE": ensemble} if ensemble else None
    with serving(model_dir, IMAGE.format("1.7-1"), extra) as s:
        status, _, text = s.invoke(rows_csv(X[:5]))
    assert status == 200, text
    np.testing.assert_allclose(numbers_csv(text)[:, 0], want, rtol=0, atol=1e-5)


# ---------------------------------------------------------------- selectable inference content, batch


def _selectable_binary(x, bst, keys):
    out = []
    for p in expected(bst, x).tolist():
        item = {"predicted_label": int(p > 0.5), "labels": [0, 1], "probability": p, "probabilities": [1 - p, p],
                "raw_score": p, "raw_scores": [1 - p, p]}  # fmt: skip
        out.append({k: item[k] for k in item if k in keys})
    return out


@pytest.mark.parametrize(
    "model, selected, accept, parse",
    [
        ("binary", "predicted_label, probabilities", "application/json", "json"),
        ("binary", "predicted_label,probability,labels", "application/jsonlines", "jsonlines"),
        ("binary", "PREDICTED_LABEL,raw_scores", "text/csv", "csv"),
        ("reg-1.7-1", "predicted_score,probability", "application/json", "json"),  # probability: NaN
    ],
    ids=["binary-json", "binary-jsonlines", "binary-csv", "regression-incompatible-key"],
)
def test_selectable_inference_content(models, model, selected, accept, parse):
    keys = selected.replace(" ", "").lower().split(",")
    bst = load(models[model])
    x = binary()[1][:6] if model == "binary" else X[:6]
    if model == "binary":
        want = _selectable_binary(x, bst, keys)
    else:
        want = [{"predicted_score": p, "probability": float("nan")} for p in expected(bst, x).tolist()]
    with serving(models[model], IMAGE.format("1.7-1"), {"SAGEMAKER_INFERENCE_OUTPUT": selected}) as s:
        status, headers, text = s.invoke(rows_csv(x), accept=accept)
    assert status == 200, text
    assert headers["Content-Type"].split(";")[0] == accept
    if parse == "json":
        got = json.loads(text)["predictions"]
    elif parse == "jsonlines":
        assert text.endswith("\n")
        got = [json.loads(line) for line in text.splitlines()]
    else:  # a row per record in the selected order; a list is quoted: 1,"[0.1, 0.9]"
        assert not text.endswith("\n") and '"[' in text
        got = [
            {k: ast.literal_eval(v) for k, v in zip(keys, row, strict=True)}
            for row in csv.reader(io.StringIO(text))
        ]
    assert close(got, want), (got, want)


def test_batch_answers_a_line_per_record_whatever_the_accept(models):
    """SAGEMAKER_BATCH (set for transform jobs): str() of each record's prediction on its own line."""
    _, xm = multiclass()
    want = expected(load(models["softprob"]), xm[:4])
    with serving(models["softprob"], IMAGE.format("1.7-1"), {"SAGEMAKER_BATCH": "true"}) as s:
        status, _, text = s.invoke(rows_csv(xm[:4]), accept="application/json")
    assert status == 200, text
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 4 and all(ln.startswith("[") for ln in lines)
    np.testing.assert_allclose(np.array([ast.literal_eval(ln) for ln in lines]), want, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- start and stop


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty", "has no model file"),
        ("missing", "cannot read the model directory"),
        ("not-a-model", "cannot be loaded"),
        ("only-a-folder", "has no model file"),
    ],
)
def test_a_model_dir_without_a_model_exits_1_with_one_line_and_writes_nothing(tmp_path, case, message):
    model_dir = tmp_path / "model"
    if case != "missing":
        model_dir.mkdir()
    if case == "not-a-model":
        (model_dir / "xgboost-model").write_bytes(b"this is not a model")
    if case == "only-a-folder":
        (model_dir / "code").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    work = short_dir()
    try:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "serve", "--image", IMAGE.format("1.7-1")],
            env=serve_env(model_dir, free_port(), str(work / "s.sock")), cwd=work, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert proc.stdout == ""
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
        assert sorted(os.listdir(work)) == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_sigterm_stops_serving_and_exits_0_with_a_connection_open(models):
    server = start(models["reg-1.7-1"], IMAGE.format("1.7-1"))
    try:
        idle = server.connection("unix")
        assert server.request("GET", "/ping", conn=idle)[0] == 200  # an idle keep-alive connection stays open
        assert Path(server.socket_path).exists()
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0, server.stderr()
        assert time.monotonic() - started < 5
        idle.close()
        assert not Path(server.socket_path).exists()
        with pytest.raises(OSError):
            server.request("GET", "/ping")
    finally:
        stop(server)
        shutil.rmtree(Path(server.stderr_path).parent, ignore_errors=True)


def test_a_stale_socket_file_is_replaced(models):
    work = short_dir()
    path = str(work / "stale.sock")
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(path)
    old.close()  # a server that died: the file stays, nothing listens
    assert Path(path).exists()
    with pytest.raises(OSError):
        UnixHTTPConnection(path).connect()
    server = start(models["reg-1.7-1"], IMAGE.format("1.7-1"), socket_path=path)
    try:
        status, _, text = server.invoke(rows_csv(X[:3]), via="unix")
        assert status == 200 and len(text.splitlines()) == 3
    finally:
        stop(server)
        shutil.rmtree(Path(server.stderr_path).parent, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


# Interpreters with an image's own libraries (xgboost 1.0, 1.7, ... as mlops.local.images.environments builds
# them), separated by os.pathsep, as test_xgboost_algorithm.py takes them; serve runs on each as a plain file.
OTHER_PYTHONS = [p for p in os.environ.get("MLOPS_XGBOOST_TEST_PYTHONS", "").split(os.pathsep) if p]
PREDICT_IN_ENV = """
import json, pickle, sys, warnings, numpy, xgboost
path, rows = sys.argv[1], numpy.array(json.loads(sys.argv[2]))
try:
    b = pickle.load(open(path, "rb"))
except Exception:
    b = xgboost.Booster()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b.load_model(path)
print(json.dumps({"version": xgboost.__version__, "p": b.predict(xgboost.DMatrix(rows)).tolist()}))
"""


@pytest.mark.skipif(not OTHER_PYTHONS, reason="MLOPS_XGBOOST_TEST_PYTHONS names no interpreters")
@pytest.mark.parametrize("python", OTHER_PYTHONS or ["none"])
def test_on_an_images_own_xgboost(tmp_path, python):
    """Without --image the image is the installed xgboost's: it trains, serves over both sockets, and the
    predictions are that xgboost's own."""
    y, x = regression(n=120)
    env = make_job(tmp_path / "job", {"num_round": "6", "max_depth": "3"},
                   {"train": (CSV_CONFIG, {"train.csv": csv_text(y, x)})})  # fmt: skip
    proc = run(env, by_path=True, cwd=tmp_path, python=python)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model = Path(env["SM_MODEL_DIR"])
    done = subprocess.run(
        [python, "-c", PREDICT_IN_ENV, str(model / "xgboost-model"), json.dumps(x[:5].tolist())],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    want = json.loads(done.stdout)
    with serving(model, None, python=python) as s:
        for via in ("tcp", "unix"):
            status, _, text = s.invoke(rows_csv(x[:5]), via=via)
            assert status == 200, text
            got = [float(v) for v in text.replace("\n", ",").strip(",").split(",")]
            np.testing.assert_allclose(got, want["p"], rtol=0, atol=1e-6)
        assert s.invoke("1,2,3,4,5,6", via="unix")[0] == 400
        loaded = [ln for ln in s.stderr().splitlines() if "model loaded" in ln]
    assert len(loaded) == 1 and f"xgboost {want['version']}" in loaded[0], loaded
