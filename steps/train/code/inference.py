"""SageMaker PyTorch serving handlers for the digits MLP (model.tar.gz's ``code/inference.py``).

Used by the endpoint and by the evaluation step, so what is evaluated is what is served.
Requests: ``application/json`` as ``{"instances": [[64 numbers], ...]}``, a bare list of rows or one row;
``text/csv`` as rows of 64 numbers without a header. Response: ``application/json``
``{"predictions": [{"label": 3, "probabilities": [...]}, ...]}``. Bad input raises ``ValueError`` with a
message fit for a 400 response.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model import build_model  # noqa: E402  (shipped beside this file)

JSON = "application/json"
CSV = "text/csv"
MAX_ROWS = 10_000


def model_fn(model_dir: str):
    """Load the model saved by train.py: ``model_config.json`` + ``model.pth`` (a state_dict)."""
    root = Path(model_dir)
    config = json.loads((root / "model_config.json").read_text())
    model = build_model(config)
    model.load_state_dict(torch.load(root / "model.pth", map_location="cpu", weights_only=True))
    model.eval()
    model.input_size = int(config["input_size"])
    return model


def _media_type(value: str | None) -> str:
    return (value or "").split(";")[0].strip().lower()


def _rows_from_json(text: str) -> list:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(
            f"request body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}"
        ) from None
    if isinstance(doc, dict):
        if "instances" not in doc:
            raise ValueError(f"JSON object must have an 'instances' list (got keys {sorted(doc)[:5]})")
        doc = doc["instances"]
    if not isinstance(doc, list):
        raise ValueError(f"expected a list of rows, got {type(doc).__name__}")
    if doc and not isinstance(doc[0], list):
        doc = [doc]  # one bare row
    return doc


def _rows_from_csv(text: str) -> list:
    return [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]


def input_fn(body, content_type: str = JSON) -> torch.Tensor:
    """Decode a request body into an (n, features) float tensor; raises ValueError on bad input."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes | bytearray) else str(body)
    media = _media_type(content_type)
    if media == JSON:
        rows = _rows_from_json(text)
    elif media == CSV:
        rows = _rows_from_csv(text)
    else:
        raise ValueError(f"unsupported content type {content_type!r}: use {JSON} or {CSV}")
    if not rows:
        raise ValueError("request has no rows")
    if len(rows) > MAX_ROWS:
        raise ValueError(f"request has {len(rows)} rows; at most {MAX_ROWS} per request")
    width = len(rows[0])
    values = []
    for index, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            size = len(row) if isinstance(row, list) else type(row).__name__
            raise ValueError(f"row {index} has {size} values; every row needs {width}")
        try:
            numbers = [float(v) for v in row if not isinstance(v, bool)]
        except (TypeError, ValueError):
            raise ValueError(f"row {index} has a value that is not a number") from None
        if len(numbers) != width or not all(math.isfinite(v) for v in numbers):
            raise ValueError(f"row {index} has a value that is not a finite number")
        values.append(numbers)
    return torch.tensor(values, dtype=torch.float32)


def predict_fn(data: torch.Tensor, model) -> torch.Tensor:
    """Class probabilities, one row per input row."""
    expected = getattr(model, "input_size", data.shape[1])
    if data.ndim != 2 or data.shape[1] != expected:
        raise ValueError(f"each row needs {expected} values (got {data.shape[-1]})")
    with torch.inference_mode():
        return torch.softmax(model(data), dim=1)


def output_fn(prediction: torch.Tensor, accept: str | None = JSON) -> str:
    """Encode probabilities as ``{"predictions": [{"label": .., "probabilities": [..]}, ...]}``."""
    media = _media_type(accept)
    if media not in ("", "*/*", JSON):
        raise ValueError(f"unsupported accept type {accept!r}: use {JSON}")
    probabilities = prediction.tolist()
    labels = prediction.argmax(dim=1).tolist()
    return json.dumps(
        {
            "predictions": [
                {"label": label, "probabilities": [round(p, 6) for p in probs]}
                for label, probs in zip(labels, probabilities, strict=True)
            ]
        }
    )
