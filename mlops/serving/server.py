"""The model server: SageMaker's serving contract (``GET /ping``, ``POST /invocations``) on starlette + uvicorn.

A model dir is an unpacked ``model.tar.gz``: model files plus ``code/inference.py`` with the PyTorch serving
handlers ``model_fn``, ``input_fn``, ``predict_fn`` and ``output_fn``. Only ``model_fn`` is required; the
others default to JSON/CSV <-> array conversion and ``model(tensor)``, as in the SageMaker inference toolkit.

Run: ``python -m mlops.serving.server --model-dir DIR --port 8080 --workers 2``. Each uvicorn worker
is its own process and loads the model once, at startup, before it accepts connections.

Multi-model (``SAGEMAKER_MULTI_MODEL=true``, what a ``Mode: MultiModel`` container is given): the model dir
is the ``ModelDataUrl`` prefix, holding ``model.tar.gz`` archives; a request's
``X-Amzn-SageMaker-Target-Model`` names one (a key below the prefix), unpacked and loaded by the worker at
its first call, the least recently used unloaded past ``MLOPS_MME_MAX_MODELS`` (default 4) loaded models.
No TargetModel is a 400, a key with no archive a 404.

JSON answers are always valid JSON (RFC 8259): a prediction with ``NaN`` or ``±Infinity`` is a model error,
answered ``500`` with ``{"error": "model output is not valid JSON: ... NaN ..."}`` rather than encoded as
``null`` (which would hide the fault from the caller and from the 5xx alarm). This holds for the default
``output_fn`` and for a custom one that returns such JSON text. A payload nested too deeply to decode (e.g.
100k nested lists) is the client's fault: ``400``, never a ``500`` that would count toward the rollback alarm.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import importlib.util
import io
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mlops.serving import CANNOT_SERVE, READY_DIR_ENV

log = logging.getLogger(__name__)

# SageMaker real-time endpoints reject bodies over 6 MB; a transform's container is told its MaxPayloadInMB.
MAX_PAYLOAD_BYTES = int(os.environ.get("SAGEMAKER_MAX_PAYLOAD_IN_MB") or 6) * 1024 * 1024
SUPPORTED_CONTENT_TYPES = ("application/json", "text/csv")
# Bodies this large are decoded and predicted in a worker thread so /ping keeps answering meanwhile;
# small ones run inline because a thread hop costs more than a single-row forward pass.
INLINE_LIMIT_BYTES = 64 * 1024
MODEL_DIR_ENV = "SM_MODEL_DIR"
PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"  # the SageMaker model servers' switch to multi-model mode
MAX_MODELS_ENV = "MLOPS_MME_MAX_MODELS"
TARGET_MODEL_HEADER = b"x-amzn-sagemaker-target-model"


class ModelLoadError(RuntimeError):
    """The model dir has no usable ``code/inference.py`` or ``model_fn`` failed."""


@dataclass(frozen=True)
class Handlers:
    model_fn: Callable[[str], Any]
    input_fn: Callable[[bytes | str, str], Any]
    predict_fn: Callable[[Any, Any], Any]
    output_fn: Callable[[Any, str], Any]


# ---- default handlers (what the toolkit does when inference.py leaves one out) ----------------------------


def default_input_fn(body: bytes | str, content_type: str) -> Any:
    import numpy as np

    text = body.decode("utf-8") if isinstance(body, bytes) else body
    if content_type == "application/json":
        return np.asarray(json.loads(text), dtype=np.float32)
    if content_type == "text/csv":
        rows = [[float(v) for v in row] for row in csv.reader(io.StringIO(text)) if row]
        return np.asarray(rows, dtype=np.float32)
    raise UnsupportedContentType(content_type)


def default_predict_fn(data: Any, model: Any) -> Any:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return model(torch.as_tensor(data))
    return model(data)


def default_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    value = prediction.tolist() if hasattr(prediction, "tolist") else prediction
    if accept == "text/csv":
        # Like numpy.savetxt in the toolkit's encoder: one line per prediction (per input row).
        rows = value if isinstance(value, list) else [value]
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(r if isinstance(r, list) else [r] for r in rows)
        return out.getvalue().encode(), "text/csv"
    if accept != "application/json":
        raise UnsupportedAccept(accept)
    try:
        return json.dumps(value, allow_nan=False).encode(), "application/json"
    except ValueError as err:  # "Out of range float values are not JSON compliant"
        raise NonFiniteOutput(f"{err} (NaN or Infinity in the prediction)") from None


class NonFiniteOutput(Exception):
    """The prediction holds NaN or Infinity, which JSON cannot carry (-> 500: a model fault)."""


def _non_finite_json(payload: bytes) -> str | None:
    """The NaN/Infinity constant a JSON answer carries (Python's json writes them; JSON has none), or None."""
    if b"NaN" not in payload and b"Infinity" not in payload:  # the common case: a C substring scan
        return None

    def refuse(name: str):
        raise NonFiniteOutput(name)

    try:
        json.loads(payload, parse_constant=refuse)
    except NonFiniteOutput as err:
        return str(err)
    except (ValueError, RecursionError):  # not JSON at all: the handler's own business
        return None
    return None


class UnsupportedContentType(Exception):
    """A handler may raise this for a content type it does not decode (-> 415)."""


class UnsupportedAccept(Exception):
    """A handler may raise this for an ``Accept`` it cannot produce (-> 406)."""


def load_handlers(model_dir: Path) -> Handlers:
    """Import ``code/inference.py`` the way the SageMaker container does: ``code/`` on ``sys.path``."""
    code_dir = model_dir / "code"
    script = code_dir / "inference.py"
    if not script.is_file():
        raise ModelLoadError(f"{script}: missing (a model dir needs code/inference.py with model_fn)")
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))  # lets inference.py import its sibling modules (model.py)
    spec = importlib.util.spec_from_file_location("inference", script)
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules["inference"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ModelLoadError(f"{script}: import failed: {type(err).__name__}: {err}") from err
    if not callable(getattr(module, "model_fn", None)):
        raise ModelLoadError(f"{script}: defines no model_fn(model_dir)")
    return Handlers(
        model_fn=module.model_fn,
        input_fn=getattr(module, "input_fn", default_input_fn),
        predict_fn=getattr(module, "predict_fn", default_predict_fn),
        output_fn=getattr(module, "output_fn", default_output_fn),
    )


# ---- the ASGI app ----------------------------------------------------------------------------------------

Answer = tuple[int, bytes, str]  # status, body, content type


def _error(status: int, message: str) -> Answer:
    return status, json.dumps({"error": message}).encode(), "application/json"


def _media_type(header: str | None, default: str) -> str:
    if not header:
        return default
    media = header.split(";", 1)[0].strip().lower()
    return media or default


def _pick_accept(header: str | None) -> str:
    """First supported type of an Accept list; JSON for ``*/*``, a missing header or nothing we know."""
    if not header:
        return "application/json"
    for part in header.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in SUPPORTED_CONTENT_TYPES:
            return media
        if media in ("*/*", "application/*"):
            return "application/json"
    return header.split(",", 1)[0].split(";", 1)[0].strip().lower()


class ModelService:
    """One loaded model and its handlers; one per worker process."""

    def __init__(self, model_dir: Path):
        self.model_dir = model_dir
        self.handlers: Handlers | None = None
        self.model: Any = None
        self._no_grad: Callable[[], Any] | None = None

    def load(self) -> None:
        started = time.perf_counter()
        handlers = load_handlers(self.model_dir)
        try:
            self.model = handlers.model_fn(str(self.model_dir))
        except Exception as err:
            raise ModelLoadError(f"{self.model_dir}: model_fn failed: {type(err).__name__}: {err}") from err
        torch = sys.modules.get("torch")  # only when the model uses torch: importing it costs seconds
        if torch is not None:
            # Worker processes already split the cores; intra-op threads would only contend.
            torch.set_num_threads(1)
            self._no_grad = torch.inference_mode
        self.handlers = handlers
        # Move torch's and the model's objects out of the cyclic GC's reach: full collections then
        # scan only per-request garbage, which keeps them from showing up as p99 spikes.
        gc.collect()
        gc.freeze()
        _mark_ready()
        log.info(
            "pid %d loaded model from %s in %.2fs", os.getpid(), self.model_dir, time.perf_counter() - started
        )

    def run(self, body: bytes, content_type: str, accept: str) -> Answer:
        handlers = self.handlers
        try:
            data = handlers.input_fn(body, content_type)
        except UnsupportedContentType:
            return _error(415, f"unsupported Content-Type {content_type!r}")
        except (ValueError, UnicodeDecodeError) as err:
            return _error(400, f"malformed {content_type} payload: {err}")
        except RecursionError:
            return _error(400, f"malformed {content_type} payload: nested too deeply to decode")
        try:
            if self._no_grad is not None:
                with self._no_grad():
                    prediction = handlers.predict_fn(data, self.model)
            else:
                prediction = handlers.predict_fn(data, self.model)
        except ValueError as err:
            return _error(400, f"invalid input: {err}")
        except Exception as err:
            log.exception("predict_fn failed")
            return _error(500, f"model error: {type(err).__name__}: {err}")
        try:
            result = handlers.output_fn(prediction, accept)
        except (
            UnsupportedAccept,
            ValueError,
        ) as err:  # the toolkit's handlers raise ValueError for an Accept
            return _error(406, f"cannot produce Accept {accept!r}: {err}")
        except NonFiniteOutput as err:
            log.error("output_fn: %s", err)
            return _error(500, f"model output is not valid JSON: {err}")
        except Exception as err:
            log.exception("output_fn failed")
            return _error(500, f"output error: {type(err).__name__}: {err}")
        # The toolkit allows output_fn to return bytes/str (content type = accept) or (body, content_type).
        payload, out_type = result if isinstance(result, tuple) else (result, accept)
        payload = payload.encode() if isinstance(payload, str) else bytes(payload)
        if _media_type(out_type, accept) == "application/json":
            constant = _non_finite_json(payload)
            if constant:
                log.error("output_fn answered JSON with %s", constant)
                return _error(
                    500, f"model output is not valid JSON: it holds {constant}, which JSON cannot carry"
                )
        return 200, payload, out_type


def _mark_ready() -> None:
    ready_dir = os.environ.get(READY_DIR_ENV)
    if ready_dir:  # one file per loaded worker: the supervisor waits for all of them, not just one /ping
        Path(ready_dir, str(os.getpid())).touch()


class TargetModelError(Exception):
    """A multi-model request without a usable TargetModel; ``status`` is the container's answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def target_archive(prefix_dir: Path, target: str | None) -> Path:
    """The archive a TargetModel names below the prefix dir; raises :class:`TargetModelError`."""
    if not target:
        raise TargetModelError(400, "multi-model endpoint: the request names no TargetModel")
    parts = target.split("/")
    if target.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise TargetModelError(400, f"TargetModel {target!r} is not a key below the model prefix")
    archive = prefix_dir.joinpath(*parts)
    if not archive.is_file():
        raise TargetModelError(404, f"TargetModel {target!r}: no model archive at that key")
    return archive


class MultiModelService:
    """Multi-model: the prefix dir's archives, each loaded as its own :class:`ModelService` at its first call
    and unloaded least-recently-used past ``max_models``; one per worker process."""

    def __init__(self, prefix_dir: Path, max_models: int = 4):
        import threading

        self.model_dir = prefix_dir
        self.max_models = max(1, max_models)
        self.handlers: Handlers | None = None  # set once loaded: /ping answers (no model loads at start)
        self._loaded: dict[str, tuple[float, ModelService, Path]] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        if not self.model_dir.is_dir():
            raise ModelLoadError(f"{self.model_dir}: the multi-model prefix is not a directory")
        # no model of its own: the handlers only say it serves (each archive brings its own)
        self.handlers = Handlers(lambda _: None, default_input_fn, default_predict_fn, default_output_fn)
        _mark_ready()
        log.info("pid %d serves the models under %s (multi-model)", os.getpid(), self.model_dir)

    def get(self, target: str | None) -> tuple[ModelService, bool]:
        """The loaded model of ``target`` and whether it was loaded already (a cache hit)."""
        import shutil
        import tarfile
        import tempfile

        archive = target_archive(self.model_dir, target)
        key = f"{target}@{archive.stat().st_mtime_ns}"  # an archive replaced under its key loads afresh
        with self._lock:
            if key in self._loaded:
                _, service, where = self._loaded[key]
                self._loaded[key] = (time.monotonic(), service, where)
                return service, True
            where = Path(tempfile.mkdtemp(prefix="mme-"))
            try:
                with tarfile.open(archive, "r:gz") as tar:
                    tar.extractall(where, filter="data")
                service = ModelService(where)
                service.load()
            except (tarfile.TarError, EOFError, OSError) as err:
                shutil.rmtree(where, ignore_errors=True)
                raise TargetModelError(
                    400, f"TargetModel {target!r}: not a readable model.tar.gz ({err})"
                ) from None
            except ModelLoadError as err:
                shutil.rmtree(where, ignore_errors=True)
                raise TargetModelError(500, f"TargetModel {target!r}: {err}") from None
            self._loaded[key] = (time.monotonic(), service, where)
            while len(self._loaded) > self.max_models:
                oldest = min(self._loaded, key=lambda k: self._loaded[k][0])
                _, _, gone = self._loaded.pop(oldest)
                shutil.rmtree(gone, ignore_errors=True)
                log.info("unloaded %s (least recently used)", oldest.rsplit("@", 1)[0])
            return service, False


class Invocations:
    """``POST /invocations`` as a plain ASGI app: the one hot path, so no per-request Request/Response objects."""

    def __init__(self, service: ModelService | MultiModelService):
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        status, payload, out_type = await self.answer(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", out_type.encode()),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def answer(self, scope, receive) -> Answer:
        service = self.service
        if service.handlers is None:
            return _error(503, "model not loaded")
        length = content_type = accept = target = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
            elif name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"accept":
                accept = value.decode("latin-1")
            elif name == TARGET_MODEL_HEADER:
                target = value.decode("latin-1")
        if isinstance(service, MultiModelService):
            try:
                service, _ = await run_in_threadpool(service.get, target)  # a first call loads: seconds
            except TargetModelError as err:
                return _error(err.status, str(err))
        if length is not None and length > MAX_PAYLOAD_BYTES:
            return _error(413, f"payload of {length} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
        content_type = _media_type(content_type, "application/json")
        # a model's own input_fn takes any type (an async endpoint's bytes, images); the default, these two
        if content_type not in SUPPORTED_CONTENT_TYPES and service.handlers.input_fn is default_input_fn:
            return _error(
                415, f"unsupported Content-Type {content_type!r}; use {' or '.join(SUPPORTED_CONTENT_TYPES)}"
            )
        accept = _pick_accept(accept)
        message = await receive()
        body = message.get("body", b"")
        if message.get("more_body"):  # count as it arrives: a huge chunked upload is refused, not buffered
            chunks, size = [body], len(body)
            while message.get("more_body"):
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_PAYLOAD_BYTES:
                    return _error(413, f"payload exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
                chunks.append(chunk)
            body = b"".join(chunks)
        if len(body) > MAX_PAYLOAD_BYTES:
            return _error(413, f"payload exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
        if len(body) > INLINE_LIMIT_BYTES:
            return await run_in_threadpool(service.run, body, content_type, accept)
        return service.run(body, content_type, accept)


class FastPath:
    """Sends ``POST /invocations`` straight to its handler and everything else through Starlette.

    Starlette's routing and middleware cost about as much per request as a single-row forward pass; the
    route table still declares /invocations so other methods get Starlette's 405.
    """

    def __init__(self, app: Starlette, invocations: Invocations):
        self.app = app
        self.invocations = invocations

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/invocations":
            await self.invocations(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(model_dir: str | os.PathLike | None = None) -> FastPath:
    """The ASGI app for one model dir (argument, else ``SM_MODEL_DIR``, else ``/opt/ml/model``); with
    ``SAGEMAKER_MULTI_MODEL=true`` the dir is a multi-model prefix."""
    where = Path(model_dir or os.environ.get(MODEL_DIR_ENV, "/opt/ml/model"))
    service: ModelService | MultiModelService
    if multi_model():
        service = MultiModelService(where, int(os.environ.get(MAX_MODELS_ENV) or 4))
    else:
        service = ModelService(where)
    invocations = Invocations(service)

    async def ping(request: Request) -> Response:
        if service.handlers is None:
            status, body, media = _error(503, "model not loaded")
            return Response(body, status_code=status, media_type=media)
        return Response(b"", status_code=200)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            service.load()  # before uvicorn accepts connections: /ping is never 200 without a model
        except ModelLoadError as err:
            log.critical("%s %s", CANNOT_SERVE, err)  # one line the supervisor quotes
            raise
        yield

    app = Starlette(
        routes=[Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])],
        lifespan=lifespan,
    )
    return FastPath(app, invocations)


def multi_model() -> bool:
    return os.environ.get(MULTI_MODEL_ENV, "").lower() == "true"


def app_factory() -> FastPath:
    """uvicorn ``--factory`` entry: each worker process builds its own app from the environment."""
    _configure_logging()  # worker processes are spawned fresh: this is their process entry point
    return create_app()


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
    )


def _unix_listener(path: str, backlog: int) -> socket.socket:
    """A listening Unix socket at ``path`` (a stale file of a dead server is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve(
    model_dir: str | os.PathLike,
    port: int,
    *,
    host: str = "127.0.0.1",
    workers: int = 2,
    uds: str | None = None,
) -> None:
    """Serve a model dir on ``host:port`` (and the Unix socket ``uds``, if given) until SIGTERM/SIGINT.

    In a sandbox the server has a network of its own: it listens on port 8080 there, as the serving
    contract says, and on ``uds``, a file in a dir shared with the host, where the endpoint's front reaches it.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    os.environ[MODEL_DIR_ENV] = str(Path(model_dir).resolve())
    options: dict[str, Any] = {"http": "h11", "loop": "asyncio"}
    try:
        import httptools  # noqa: F401

        options["http"] = "httptools"
    except ImportError:
        pass
    try:
        import uvloop  # noqa: F401

        options["loop"] = "uvloop"
    except ImportError:
        pass
    config = uvicorn.Config(
        "mlops.serving.server:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=10,
        **options,
    )
    server = uvicorn.Server(config)
    sockets = [config.bind_socket()]
    if uds:
        sockets.append(_unix_listener(uds, config.backlog))
    try:
        if workers > 1:
            Multiprocess(config, sockets=sockets).run()
        else:
            server.run(sockets=sockets)
    except KeyboardInterrupt:
        pass
    finally:
        if uds:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(uds)
    if workers == 1 and not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE: the model did not load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get(MODEL_DIR_ENV, "/opt/ml/model"))
    parser.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV, "8080")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--uds", help="also listen on this Unix socket (how the front reaches a sandbox)")
    # The SageMaker container reads its worker count from this variable; 2 suits a 2-core box.
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", "2"))
    )
    args = parser.parse_args(argv)
    _configure_logging()
    script = Path(args.model_dir) / "code" / "inference.py"
    if not multi_model() and not script.is_file():  # fail before forking workers, with one clear line
        print(
            f"error: {script}: missing (a model dir needs code/inference.py with model_fn)", file=sys.stderr
        )
        return 2
    serve(args.model_dir, args.port, host=args.host, workers=args.workers, uds=args.uds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
