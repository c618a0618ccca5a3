"""A framework image's serving container with a user script: ``SAGEMAKER_PROGRAM`` through the handler contract.

Run inside a serving container, as the image's own entrypoint would run the model server::

    python3 handler_serving.py --framework {sklearn,xgboost,pytorch,generic} --code-dir /opt/ml/model/code

It imports ``SAGEMAKER_PROGRAM`` (``inference.py``; the module name is the file name without ``.py``) from the
code dir, put first on ``sys.path`` (and ``PYTHONPATH``) so that its sibling modules import, calls its
``model_fn(model_dir)`` once, then answers ``GET /ping``, ``POST /invocations`` and
``GET /execution-parameters`` on ``0.0.0.0:SAGEMAKER_BIND_TO_PORT`` (default 8080) and on the Unix socket
``MLOPS_SERVING_SOCKET`` names (when set; a stale socket file there is replaced, the file is removed on
exit) until SIGTERM, then exits 0. When the script cannot be imported or ``model_fn`` fails it prints the
traceback, then one last line naming the error (``ModelLoadError: model_fn of inference.py failed:
OSError: ...``), and exits 1.

Self-contained on purpose: the standard library only at import time, so the file runs as a plain script in an
image's own Python (3.7 or later); numpy (scipy for ``application/x-npz``, torch, xgboost) is imported by the
default handlers when a request needs it. Nothing from ``mlops``.

Facts carried over (paths under ``src/``):

* The handler contract, from github:aws/sagemaker-inference-toolkit (``sagemaker_inference/transformer.py``,
  the serving stack of the PyTorch, MXNet and Hugging Face images and of every multi-model container):
  ``model_fn(model_dir)``, ``input_fn(input_data, content_type)``, ``predict_fn(data, model)``,
  ``output_fn(prediction, accept)``, or ``transform_fn(model, input_data, content_type, accept)`` alone
  (with any of the other three it is an error at start: "Cannot use transform_fn implementation in
  conjunction with input_fn, predict_fn, and/or output_fn implementation"); optional ``pre_model_fn(model_dir)``
  and ``model_warmup_fn(model_dir, model)``; a handler that takes one more parameter than that gets a context
  (``system_properties["model_dir"]``), one that takes any other number is a ``TypeError``. The body is
  decoded from UTF-8 before ``input_fn`` when the Content-Type is exactly ``application/json`` or
  ``text/csv`` (``content_types.UTF8_TYPES``), else passed as bytes. An Accept that is absent or ``*/*`` is
  ``SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT`` (default ``application/json``: ``environment.py``). A handler's
  result ``(body, content_type)`` sets the response type, a bare body answers as the Accept. An error is
  ``500`` with the error's message, unless it carries its own ``status_code`` (``errors.py``'s
  ``BaseInferenceToolkitError``, e.g. ``GenericInferenceToolkitError(400, "...")``), so an unsupported
  Content-Type or Accept is 500 ("Content type X is not supported by this framework."), never 415/406.
  ``GET /ping`` answers ``{"status": "Healthy"}`` (MMS / TorchServe) once the model is loaded.
* Its default handlers (``default_inference_handler.py``, ``decoder.py``, ``encoder.py``): model_fn and
  predict_fn are required ("Please provide a model_fn implementation."); input ``application/json``
  (``np.array(json.loads(...))``), ``text/csv`` (``np.genfromtxt(..., delimiter=",")``), ``application/x-npy``
  (``np.load(..., allow_pickle=True)``) and ``application/x-npz`` (``scipy.sparse.load_npz``); output the
  first of the Accept's comma-separated types that is ``application/json`` (``json.dumps``, arrays by
  ``tolist``), ``text/csv`` (``np.savetxt(..., delimiter=",", fmt="%s")``) or ``application/x-npy``
  (``np.save``). ``--framework generic`` (MXNet, Hugging Face images) serves with these.
* PyTorch (github:aws/sagemaker-pytorch-inference-toolkit,
  ``sagemaker_pytorch_serving_container/default_pytorch_inference_handler.py``): model_fn loads ``model.pt``
  or the model dir's one ``.pt`` / ``.pth`` file with ``torch.jit.load`` ("Exactly one .pth or .pt file is
  required for PyTorch models"); input_fn decodes as above into ``torch.FloatTensor`` (JSON, CSV) or
  ``torch.from_numpy`` (NPY); predict_fn runs ``model.eval()`` then ``model(data)`` under ``torch.no_grad()``;
  output_fn turns a tensor into a list and answers the first supported Accept type, CSV as bytes, with the
  Accept header as the response type.
* scikit-learn and XGBoost framework mode (github:aws/sagemaker-scikit-learn-container
  ``sagemaker_sklearn_container/serving.py``, github:aws/sagemaker-xgboost-container
  ``sagemaker_xgboost_container/serving.py`` and ``encoder.py``): a single-model container runs Flask under
  gunicorn through sagemaker-containers 2.8.6.post2 (github:aws/sagemaker-containers ``_transformer.py``,
  ``_worker.py``, ``_encoders.py``, ``_env.py``, ``_modules.py``). The script comes from
  ``SAGEMAKER_SUBMIT_DIRECTORY`` (an ``s3://.../sourcedir.tar.gz`` unpacked into ``/opt/ml/code``, or a dir);
  a missing Content-Type is ``application/json``, the header is also read as ``ContentType``; model_fn is
  required; sklearn's input_fn decodes JSON (``np.array``), CSV (``csv.reader`` rows, ``squeeze()``, as
  float) and NPY, then casts JSON and CSV to float32; predict_fn is ``model.predict(data)``; output_fn encodes
  to the Accept exactly as given (JSON, CSV one row per line through ``csv.writer``, a 1-D array as one
  column, or NPY), answered with that mimetype (Flask adds ``; charset=utf-8`` to ``text/*``). XGBoost's
  input_fn makes a ``DMatrix`` from ``text/csv`` (delimiter sniffed from the first line, empty fields NaN)
  or ``text/libsvm`` / ``text/x-libsvm`` (parameters of the Content-Type ignored; anything else, JSON
  included, is not supported) and predict_fn is ``model.predict(dmatrix, validate_features=False)``. The
  framework wraps every user function and its own defaults in ``ClientError``, so every handler error is a
  500 here too (the 415 / 406 of ``_transformer._default_transform_fn`` are never reached: the images pass
  their own defaults). A plain ``str`` result answers ``text/html`` as Flask does, a ``dict`` JSON; a
  Flask-style response object (``get_data()``, ``status_code``, ``mimetype``) is answered as it is. A
  script's ``execution_parameters_fn()`` answers ``GET /execution-parameters`` (sklearn ``serving.py``).
  ``GET /ping`` is an empty 200.
* ``GET /execution-parameters`` without the script's own: ``{"MaxConcurrentTransforms": <workers>,
  "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": <MB>}`` as the images' MMS plugin answers it
  (github:aws/sagemaker-scikit-learn-container ``docker/1.2-1/resources/mms/ExecutionParameters.java``):
  workers from ``SAGEMAKER_MODEL_SERVER_WORKERS`` (default 1), MB from ``SAGEMAKER_MAX_PAYLOAD_IN_MB``
  (sagemaker-inference ``parameters.MAX_REQUEST_SIZE``; default 6), which also bounds a request body (413).

Deliberate differences: one threaded process serves, predictions one at a time (the images run
``SAGEMAKER_MODEL_SERVER_WORKERS`` processes); an error body is one line (the images add the traceback;
the traceback goes to the log); a missing Content-Type is ``application/json`` on every stack; the code dir's
``requirements.txt`` is not installed (the image pip-installs it at start): say what it needs in the image's
environment (config ``local.images``); XGBoost's CSV decoder drops trailing newlines (the container's fails on
them) and falls back to ``,`` when it cannot sniff a delimiter; ``application/x-recordio-protobuf`` input to
XGBoost is not supported; Hugging Face's own default handlers (pipelines from ``HF_TASK``) are not here.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import inspect
import io
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback

log = logging.getLogger("handler_serving")

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
ANY = "*/*"
UTF8_TYPES = (JSON, CSV)
ENCODABLE = (JSON, CSV, NPY)  # sagemaker-inference encoder.SUPPORTED_CONTENT_TYPES
LIBSVM_TYPES = ("text/libsvm", "text/x-libsvm")
DEFAULT_PORT = 8080
DEFAULT_PAYLOAD_MB = 6
DEFAULT_PROGRAM = "inference.py"  # sagemaker-inference environment.DEFAULT_MODULE_NAME
FRAMEWORKS = ("generic", "pytorch", "sklearn", "xgboost")
# Which serving stack the framework's single-model container runs: the inference toolkit (MMS / TorchServe)
# or sagemaker-containers (Flask under gunicorn).
STACK = {"generic": "inference", "pytorch": "inference", "sklearn": "containers", "xgboost": "containers"}
_TEXT = "text/plain; charset=utf-8"


class UnsupportedFormatError(Exception):
    """A content type the default handlers cannot decode or encode (the toolkits' own class and words)."""

    def __init__(self, content_type):
        super().__init__(
            f"Content type {content_type} is not supported by this framework. Please implement input_fn to deserialize "
            "the request data or an output_fn to serialize the response."
        )


class ModelLoadError(Exception):
    """The script could not be imported, its handlers do not fit the contract, or model_fn failed."""


def _container_http():
    """The shared HTTP side (``container_http.py``), loaded from beside this file: in a container both are
    mounted side by side, and this script imports nothing of the toolkit."""
    import importlib.util

    module = sys.modules.get("container_http")
    if module is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "container_http.py")
        spec = importlib.util.spec_from_file_location("container_http", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["container_http"] = module
        spec.loader.exec_module(module)
    return module


container_http = _container_http()
HttpError = container_http.HttpError


def _np():
    import numpy

    return numpy


def _one_line(text) -> str:
    return " ".join(str(text).split())


# -- sagemaker-inference's decoders and encoders ----------------------------------------------------------


def decode(data, content_type):
    """sagemaker_inference.decoder.decode: JSON, CSV, NPY, NPZ to numpy (NPZ: a scipy sparse matrix)."""
    np = _np()
    if content_type == JSON:
        return np.array(json.loads(data))
    if content_type == CSV:
        return np.genfromtxt(io.StringIO(data), delimiter=",")
    if content_type == NPY:
        return np.load(io.BytesIO(data), allow_pickle=True)
    if content_type == NPZ:
        import scipy.sparse

        return scipy.sparse.load_npz(io.BytesIO(data))
    raise UnsupportedFormatError(content_type)


def _tolist(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return json.JSONEncoder().default(value)


def encode(prediction, content_type):
    """sagemaker_inference.encoder.encode: JSON and CSV as text, NPY as bytes."""
    if content_type == JSON:
        return json.dumps(prediction, default=_tolist)
    if content_type == CSV:
        stream = io.StringIO()
        _np().savetxt(stream, prediction, delimiter=",", fmt="%s")
        return stream.getvalue()
    if content_type == NPY:
        buffer = io.BytesIO()
        _np().save(buffer, prediction)
        return buffer.getvalue()
    raise UnsupportedFormatError(content_type)


def parse_accept(accept):
    """sagemaker_inference.utils.parse_accept."""
    return accept.replace(" ", "").split(",")


# -- sagemaker-containers' decoders and encoders (scikit-learn, XGBoost framework mode) --------------------


def sc_decode(data, content_type):
    np = _np()
    if content_type == JSON:
        return np.array(json.loads(data))
    if content_type == CSV:  # _encoders.csv_to_numpy: rows of strings, squeezed, then as float
        rows = list(
            csv.reader(io.StringIO(data), delimiter=",", quotechar='"', doublequote=True, strict=True)
        )
        array = np.array(rows).squeeze()
        try:
            return array.astype(None)
        except ValueError:  # the container keeps the strings (dtype None): the cast below fails on them
            return array
    if content_type == NPY:
        return np.load(io.BytesIO(data), allow_pickle=True)
    raise UnsupportedFormatError(content_type)


def sc_encode(prediction, content_type):
    np = _np()
    if content_type == JSON:
        return json.dumps(prediction, default=_tolist)
    if content_type == CSV:
        array = np.array(prediction)
        if len(array.shape) == 1:
            array = np.reshape(array, (array.shape[0], 1))
        stream = io.StringIO()
        csv.writer(
            stream, lineterminator="\n", delimiter=",", quotechar='"', doublequote=True, strict=True
        ).writerows(array)
        return stream.getvalue()
    if content_type == NPY:
        buffer = io.BytesIO()
        np.save(buffer, prediction)
        return buffer.getvalue()
    raise UnsupportedFormatError(content_type)


class Response:
    """What a sagemaker-containers default output_fn returns (its ``worker.Response``)."""

    def __init__(self, response, mimetype, status=200):
        self.body, self.mimetype, self.status_code = response, mimetype, status

    def get_data(self):
        return self.body.encode("utf-8") if isinstance(self.body, str) else bytes(self.body)


# -- the frameworks' default handlers ----------------------------------------------------------------------


class GenericDefaults:
    """sagemaker_inference.default_inference_handler.DefaultInferenceHandler."""

    def model_fn(self, model_dir):
        raise NotImplementedError(
            "Please provide a model_fn implementation. See documentation for model_fn at "
            "https://sagemaker.readthedocs.io/en/stable/"
        )

    def input_fn(self, input_data, content_type):
        return decode(input_data, content_type)

    def predict_fn(self, data, model):
        raise NotImplementedError(
            "Please provide a predict_fn implementation. See documentation for predict_fn at "
            "https://sagemaker.readthedocs.io/en/stable/"
        )

    def output_fn(self, prediction, accept):
        for content_type in parse_accept(accept):
            if content_type in ENCODABLE:
                return encode(prediction, content_type), content_type
        raise UnsupportedFormatError(accept)


class PytorchDefaults(GenericDefaults):
    """sagemaker_pytorch_serving_container.default_pytorch_inference_handler."""

    @staticmethod
    def _device():
        import torch

        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def model_fn(self, model_dir):
        import torch

        device = self._device()
        path = os.path.join(model_dir, "model.pt")
        if not os.path.exists(path):
            files = [
                f for f in sorted(os.listdir(model_dir))
                if os.path.isfile(os.path.join(model_dir, f)) and os.path.splitext(f)[1] in (".pt", ".pth")
            ]  # fmt: skip
            if len(files) != 1:
                raise ValueError(f"Exactly one .pth or .pt file is required for PyTorch models: {files}")
            path = os.path.join(model_dir, files[0])
        try:
            model = torch.jit.load(path, map_location=device)
        except RuntimeError as err:
            raise ModelLoadError(
                f"Failed to load {path}. Please ensure model is saved using torchscript."
            ) from err
        return model.to(device)

    def input_fn(self, input_data, content_type):
        import torch

        array = decode(input_data, content_type)
        tensor = torch.FloatTensor(array) if content_type in UTF8_TYPES else torch.from_numpy(array)
        return tensor.to(self._device())

    def predict_fn(self, data, model):
        import torch

        device = self._device()
        with torch.no_grad():
            model = model.to(device)
            model.eval()
            return model(data.to(device))

    def output_fn(self, prediction, accept):
        torch = sys.modules.get("torch")
        if torch is not None and type(prediction) is torch.Tensor:
            prediction = prediction.detach().cpu().numpy().tolist()
        for content_type in parse_accept(accept):
            if content_type in ENCODABLE:
                encoded = encode(prediction, content_type)
                return encoded.encode("utf-8") if content_type == CSV else encoded
        raise UnsupportedFormatError(accept)


class SklearnDefaults:
    """sagemaker_sklearn_container.serving (the Flask stack of a single-model container)."""

    def model_fn(self, model_dir):  # sagemaker-containers' _transformer.default_model_fn
        raise NotImplementedError(
            "Please provide a model_fn implementation. See documentation for model_fn at "
            "https://github.com/aws/sagemaker-python-sdk"
        )

    def input_fn(self, input_data, content_type):
        array = sc_decode(input_data, content_type)
        return array.astype(_np().float32) if content_type in UTF8_TYPES else array

    def predict_fn(self, input_data, model):
        return model.predict(input_data)

    def output_fn(self, prediction, accept):
        return Response(sc_encode(prediction, accept), accept)


def _media_type(content_type):
    return (content_type or "").split(";", 1)[0].strip()


class XgboostDefaults(SklearnDefaults):
    """sagemaker_xgboost_container.serving and encoder (framework mode)."""

    def input_fn(self, input_data, content_type):
        media = _media_type(content_type)
        text = input_data.decode("utf-8") if isinstance(input_data, (bytes, bytearray)) else input_data
        if media == CSV:
            return self._csv(text)
        if media in LIBSVM_TYPES:
            return self._libsvm(text)
        raise UnsupportedFormatError(media)

    @staticmethod
    def _csv(text):
        import xgboost

        text = text.rstrip("\r\n")
        try:
            sniffed = csv.Sniffer().sniff(text.split("\n")[0][:512]).delimiter
        except csv.Error:
            sniffed = ","
        delimiter = "," if sniffed.isalnum() else sniffed
        rows = [
            ["nan" if x == "" else x for x in line.rstrip("\r").split(delimiter)] for line in text.split("\n")
        ]
        return xgboost.DMatrix(_np().array(rows).astype(None))

    @staticmethod
    def _libsvm(text):
        import xgboost

        np = _np()
        rows = []
        for line in text.strip().split("\n"):
            row = {}
            for token in line.strip().split():
                if ":" in token:
                    index, value = token.split(":", 1)
                    row[int(index)] = float(value)
            rows.append(row)
        if not rows or not any(rows):
            return xgboost.DMatrix(np.empty((0, 0)))
        low = min(i for row in rows for i in row)
        offset = 1 if low >= 1 else 0  # standard libsvm indices are 1-based
        width = max(i for row in rows for i in row) - offset + 1
        data = np.zeros((len(rows), width))
        for r, row in enumerate(rows):
            for i, value in row.items():
                data[r, i - offset] = value
        return xgboost.DMatrix(data)

    def predict_fn(self, input_data, model):
        return model.predict(input_data, validate_features=False)


DEFAULTS = {
    "generic": GenericDefaults,
    "pytorch": PytorchDefaults,
    "sklearn": SklearnDefaults,
    "xgboost": XgboostDefaults,
}


# -- the transformer ---------------------------------------------------------------------------------------


class Context:
    """The little of MMS's context a handler that takes one reads."""

    def __init__(self, model_dir):
        self.system_properties = {"model_dir": model_dir, "gpu_id": None, "batch_size": 1}
        self.model_name = "model"
        self.manifest = {}


def _with_context(func, args, context):
    """sagemaker_inference.transformer._run_handler_function: ``func(*args)``, or with the context after."""
    count = len(inspect.signature(func).parameters)
    if count == len(args):
        return func(*args)
    if count == len(args) + 1:
        return func(*(tuple(args) + (context,)))
    raise TypeError(
        "{} takes {} arguments but {} were given.".format(getattr(func, "__name__", func), count, len(args))
    )


def _content_type_header(headers):
    """sagemaker_inference.utils.retrieve_content_type_header: ``Content-Type`` or ``ContentType``."""
    for key in ("Content-Type", "ContentType"):
        value = headers.get(key)
        if value:
            return value
    return None


class Service:
    """The script's handlers and the model they loaded."""

    def __init__(self, framework, code_dir, model_dir, env):
        self.framework, self.stack = framework, STACK[framework]
        self.code_dir, self.model_dir = code_dir, model_dir
        self.program = env.get("SAGEMAKER_PROGRAM") or DEFAULT_PROGRAM
        self.default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT") or JSON
        self.payload_mb = int(env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB") or DEFAULT_PAYLOAD_MB)
        self.workers = int(env.get("SAGEMAKER_MODEL_SERVER_WORKERS") or 1)
        self.context = Context(model_dir)
        self.lock = threading.Lock()  # one worker: predictions one at a time, as one model server worker
        self.model = None
        self.execution_parameters_fn = None

    @property
    def max_body(self):
        return self.payload_mb * 1024 * 1024

    def _call(self, func, *args):
        if self.stack == "inference":
            return _with_context(func, args, self.context)
        return func(*args)

    def _import(self):
        module_name = self.program[:-3] if self.program.endswith(".py") else self.program
        path = os.path.join(self.code_dir, self.program if self.program.endswith(".py") else module_name)
        if self.code_dir in sys.path:
            sys.path.remove(self.code_dir)
        sys.path.insert(0, self.code_dir)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [self.code_dir] + [p for p in [os.environ.get("PYTHONPATH")] if p]
        )
        if os.path.isfile(os.path.join(self.code_dir, "requirements.txt")):
            log.warning(
                "%s: not installed here (the image pip-installs it at start); give the image's environment "
                "what it needs (config local.images)", os.path.join(self.code_dir, "requirements.txt"),
            )  # fmt: skip
        if not (os.path.isfile(path) or os.path.isfile(os.path.join(path, "__init__.py"))):
            where = f"SAGEMAKER_PROGRAM {self.program} is not in {self.code_dir}"
            if self.stack == "containers":
                raise ModelLoadError(where)
            # sagemaker-inference serves with the framework's default handlers when the module is not found
            log.warning("%s: serving with the %s image's default handlers", where, self.framework)
            return None
        try:
            return importlib.import_module(module_name)
        except Exception as err:
            raise ModelLoadError(
                f"importing {self.program} failed: {type(err).__name__}: {_one_line(err)}"
            ) from err

    def load(self):
        defaults = DEFAULTS[self.framework]()
        module = self._import()

        def get(name):
            return getattr(module, name, None) if module is not None else None

        transform_fn = get("transform_fn")
        user = {name: get(name) for name in ("input_fn", "predict_fn", "output_fn")}
        if transform_fn is not None and any(user.values()):
            raise ModelLoadError(
                f"{self.program}: Cannot use transform_fn implementation in conjunction with input_fn, predict_fn, and/or "
                "output_fn implementation"
            )
        self.transform_fn = transform_fn
        self.input_fn = user["input_fn"] or defaults.input_fn
        self.predict_fn = user["predict_fn"] or defaults.predict_fn
        self.output_fn = user["output_fn"] or defaults.output_fn
        self.execution_parameters_fn = get("execution_parameters_fn")
        model_fn = get("model_fn") or defaults.model_fn
        named = "model_fn" if get("model_fn") else "the default model_fn"
        what = named
        try:
            if self.stack == "inference" and get("pre_model_fn"):
                what = "pre_model_fn"
                self._call(get("pre_model_fn"), self.model_dir)
            what = named
            self.model = self._call(model_fn, self.model_dir)
            if self.stack == "inference" and get("model_warmup_fn"):
                what = "model_warmup_fn"
                self._call(get("model_warmup_fn"), self.model_dir, self.model)
        except Exception as err:
            raise ModelLoadError(
                f"{what} of {self.program} failed: {type(err).__name__}: {_one_line(err)}"
            ) from err

    # -- requests

    def ping(self):
        if self.stack == "inference":  # MMS / TorchServe
            return 200, JSON, b'{"status": "Healthy"}\n'
        return 200, JSON, b""

    def execution_parameters(self):
        if self.execution_parameters_fn is not None:
            with self.lock:
                result = self.execution_parameters_fn()
            return self._response(result, JSON)
        body = {
            "MaxConcurrentTransforms": self.workers,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": self.payload_mb,
        }
        return 200, JSON, json.dumps(body).encode("utf-8")

    def invoke(self, body, headers):
        content_type = _content_type_header(headers) or JSON
        accept = headers.get("Accept")
        if not accept or accept == ANY:
            accept = self.default_accept
        data = body
        if content_type in UTF8_TYPES:
            try:
                data = body.decode("utf-8")
            except UnicodeDecodeError as err:
                raise HttpError(500, f"the {content_type} body is not UTF-8: {err}") from None
        try:
            with self.lock:
                if self.transform_fn is not None:
                    result = self._call(self.transform_fn, self.model, data, content_type, accept)
                else:
                    decoded = self._call(self.input_fn, data, content_type)
                    prediction = self._call(self.predict_fn, decoded, self.model)
                    result = self._call(self.output_fn, prediction, accept)
        except Exception as err:
            status = getattr(err, "status_code", None) if self.stack == "inference" else None
            if isinstance(status, int) and 100 <= status < 600 and not isinstance(status, bool):
                message = getattr(err, "message", None) or str(err)
            else:
                status, message = 500, f"{type(err).__name__}: {err}"
            raise HttpError(status, message) from err
        return self._response(result, accept)

    def _response(self, result, accept):
        status = 200
        if isinstance(result, tuple):  # (body, content_type): backwards compatible in both stacks
            body, content_type = result[0], result[1]
        elif hasattr(result, "get_data") and hasattr(result, "status_code"):  # a Flask-style response
            body, status = result.get_data(), int(result.status_code)
            content_type = getattr(result, "mimetype", None) or getattr(result, "content_type", None) or JSON
        elif self.stack == "containers" and isinstance(result, (str, bytes, bytearray)):
            body, content_type = result, "text/html"  # what Flask makes of a view's string
        elif self.stack == "containers" and isinstance(result, (dict, list)):
            body, content_type = json.dumps(result, default=_tolist), JSON  # Flask's jsonify
        else:
            body, content_type = result, accept
        content_type = str(content_type)
        if self.stack == "containers" and content_type.startswith("text/") and "charset" not in content_type:
            content_type += "; charset=utf-8"
        return status, content_type, _body_bytes(body)


def _body_bytes(body):
    """What the model server sends for a handler's result: text as UTF-8, bytes as they are, else JSON."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    return json.dumps(body, default=_tolist).encode("utf-8")


# -- HTTP --------------------------------------------------------------------------------------------------


def _handler_class(service, nodelay):
    routes = {"/ping": "GET", "/execution-parameters": "GET", "/invocations": "POST"}

    def answer(path, headers, read_body):
        if path == "/ping":  # the model is loaded before the server listens
            return service.ping()
        if path == "/execution-parameters":
            return service.execution_parameters()
        return service.invoke(read_body(), headers)

    def done(method, path, status, message, size, ms):
        if message is not None:
            log.error("%s %s %d: %s", method, path, status, message)

    return container_http.handler_class(
        container_http.routed(routes, answer), name="sagemaker-handler-serving-local", limit=service.max_body,
        too_large=f"Request Entity Too Large: the payload is larger than {service.payload_mb} MB",
        error_type=_TEXT, log=log, nodelay=nodelay, on_done=done,
    )  # fmt: skip


def serve(framework, code_dir, env=None):
    """Loads the script's model, then serves until SIGTERM; returns 0. Raises ModelLoadError when it cannot."""
    env = dict(os.environ if env is None else env)
    model_dir = env.get("SM_MODEL_DIR") or "/opt/ml/model"
    service = Service(framework, code_dir, model_dir, env)
    started = time.monotonic()
    service.load()
    log.info(
        "model loaded by %s from %s in %.2f s (%s image handlers; default accept %s)", service.program, code_dir,
        time.monotonic() - started, framework, service.default_accept,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    port = int(env.get("SAGEMAKER_BIND_TO_PORT") or DEFAULT_PORT)
    socket_path = env.get("MLOPS_SERVING_SOCKET") or None
    try:
        servers = container_http.listen(lambda nodelay: _handler_class(service, nodelay), port, socket_path)
    except container_http.ListenError as err:
        raise ModelLoadError(str(err)) from None
    log.info("listening on 0.0.0.0:%d%s", port, " and unix:" + socket_path if socket_path else "")
    container_http.serve_until(stop, servers, socket_path, log)
    return 0


def _setup_logging():
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[%(asctime)s:%(levelname)s] %(message)s", "%Y-%m-%d:%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(logging.INFO)
    log.propagate = False


def main(argv=None):
    parser = argparse.ArgumentParser(prog="handler_serving", description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=FRAMEWORKS, default="generic",
                        help="whose default handlers fill in what the script leaves out")  # fmt: skip
    parser.add_argument("--code-dir", default="/opt/ml/model/code", help="where SAGEMAKER_PROGRAM is")
    args = parser.parse_args(argv)
    _setup_logging()
    # this file's own dir is no place to import the script's modules from
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    try:
        return serve(args.framework, os.path.abspath(args.code_dir))
    except Exception as err:
        cause = err.__cause__ if isinstance(err, ModelLoadError) else err
        if cause is not None and cause.__traceback__ is not None:
            frames = "".join(traceback.format_tb(cause.__traceback__))
            sys.stderr.write("Traceback (most recent call last):\n" + frames)
        text = str(err) if isinstance(err, ModelLoadError) else f"{type(err).__name__}: {err}"
        # the last line: what the caller's "did not start" message quotes (``Name: message``, one line)
        sys.stderr.write(f"ModelLoadError: {_one_line(text)}\n")
        sys.stderr.flush()
        return 1


if __name__ == "__main__":
    sys.exit(main())
