"""The simplest endpoint a user would write for a model dir: a raw ASGI app on uvicorn, no framework.

It imports the model dir's ``code/inference.py``, calls ``model_fn`` once (per uvicorn worker, at import) and
answers ``POST /invocations`` with ``output_fn(predict_fn(input_fn(body, content_type), model), accept)``
and ``GET /ping`` with 200. Handlers the script leaves out get the obvious JSON + torch stand-ins. None of
the toolkit's server code is used: no starlette, no payload limits, no Accept negotiation, no NaN check.

    BARE_MODEL_DIR=DIR python -m uvicorn bare_uvicorn_app:app --app-dir bench --lifespan off \\
        --host 127.0.0.1 --port 8080 --workers 2

``BARE_READY_DIR`` (optional, for bench/bench_endpoint.py): each worker touches ``<dir>/<pid>`` once its model
is loaded, so the bench starts measuring only when every worker serves.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

MODEL_DIR = os.environ["BARE_MODEL_DIR"]
sys.path.insert(0, str(Path(MODEL_DIR, "code")))

import inference  # noqa: E402  (the model dir's code/inference.py)


def _input_fn(body, content_type):
    import torch

    return torch.tensor(json.loads(body), dtype=torch.float32)


def _predict_fn(data, model):
    import torch

    with torch.inference_mode():
        return model(data)


def _output_fn(prediction, accept):
    return json.dumps(prediction.tolist())


input_fn = getattr(inference, "input_fn", _input_fn)
predict_fn = getattr(inference, "predict_fn", _predict_fn)
output_fn = getattr(inference, "output_fn", _output_fn)
model = inference.model_fn(MODEL_DIR)

if os.environ.get("BARE_READY_DIR"):
    Path(os.environ["BARE_READY_DIR"], str(os.getpid())).touch()


async def _reply(send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send) -> None:
    if scope["path"] == "/ping" and scope["method"] == "GET":
        return await _reply(send, 200, b"", b"text/plain")
    if scope["path"] != "/invocations" or scope["method"] != "POST":
        return await _reply(send, 404, b'{"error": "not found"}')
    headers = dict(scope["headers"])
    content_type = headers.get(b"content-type", b"application/json").decode()
    accept = headers.get(b"accept", b"application/json").decode()
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    try:
        result = output_fn(predict_fn(input_fn(body, content_type), model), accept)
    except ValueError as err:
        return await _reply(send, 400, json.dumps({"error": str(err)}).encode())
    except Exception as err:
        return await _reply(send, 500, json.dumps({"error": f"{type(err).__name__}: {err}"}).encode())
    payload, out_type = result if isinstance(result, tuple) else (result, accept)
    payload = payload.encode() if isinstance(payload, str) else bytes(payload)
    await _reply(send, 200, payload, out_type.encode())
