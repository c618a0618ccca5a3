"""The dataset a Model Monitor job reads, as its ``dataset_format`` environment variable describes it.

``dataset_format`` is the JSON the SDK's ``DatasetFormat`` writes: ``{"csv": {"header": bool,
"output_columns_position": "START"}}``, ``{"json": {"lines": bool}}`` or ``{"parquet": {}}``. Headerless CSV
columns are named ``_c0``, ``_c1``... as the analyzer (Spark) names them, which is what ``inference_attribute``
and ``ground_truth_attribute`` refer to in such a dataset. Every object under the input's prefix is read and
the rows are concatenated; CSV is read as text so that each value's type is inferred as the analyzer does.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from mlops.local.monitor import MonitorError

FORMATS = ("csv", "json", "parquet")
INTEGRAL, FRACTIONAL, STRING, UNKNOWN = "Integral", "Fractional", "String", "Unknown"
_INT = re.compile(r"[+-]?\d+")


def parse_format(text: Any) -> tuple[str, dict[str, Any]]:
    """``(format, its options)`` of a ``dataset_format`` value (a JSON string or an object)."""
    if isinstance(text, str):
        try:
            value = json.loads(text)
        except ValueError:
            raise MonitorError(f"Environment.dataset_format: not JSON: {text[:80]!r}") from None
    else:
        value = text
    if not isinstance(value, dict) or len(value) != 1:
        raise MonitorError(
            f"Environment.dataset_format: expected one of {{{', '.join(FORMATS)}}} as the only key, got "
            f"{json.dumps(value)[:80]}"
        )
    kind, options = next(iter(value.items()))
    if kind not in FORMATS:
        raise MonitorError(
            f"Environment.dataset_format: unknown format {kind!r} (one of {', '.join(FORMATS)})"
        )
    return kind, options if isinstance(options, dict) else {}


def read(files: Iterable[Path], kind: str, options: dict[str, Any]) -> pd.DataFrame:
    """Every file's rows, concatenated; empty files are skipped."""
    frames = []
    for path in files:
        if path.stat().st_size == 0:
            continue
        try:
            frames.append(_read_one(path, kind, options))
        except (ValueError, OSError, UnicodeDecodeError) as err:
            raise MonitorError(
                f"{path.name}: not readable as {kind}: {str(err).splitlines()[0][:160]}"
            ) from None
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _read_one(path: Path, kind: str, options: dict[str, Any]) -> pd.DataFrame:
    if kind == "csv":
        header = bool(options.get("header"))
        frame = pd.read_csv(
            path, header=0 if header else None, dtype=object, keep_default_na=False, na_values=[""],
            skipinitialspace=True,
        )  # fmt: skip
        if not header:
            frame.columns = [f"_c{i}" for i in range(frame.shape[1])]
        return frame
    if kind == "json":
        return pd.read_json(path, lines=bool(options.get("lines")), dtype=False, convert_dates=False)
    return pd.read_parquet(path)


def value_kind(value: Any) -> str | None:
    """The analyzer's type of one value: Integral, Fractional or String; None when it is missing."""
    if value is None:
        return None
    if isinstance(value, bool):
        return STRING
    if isinstance(value, int):
        return INTEGRAL
    if isinstance(value, float):
        return None if math.isnan(value) else FRACTIONAL
    if hasattr(value, "dtype") and hasattr(value, "item"):  # a numpy scalar
        return value_kind(value.item())
    text = str(value).strip()
    if not text:
        return None
    if _INT.fullmatch(text):
        return INTEGRAL
    try:
        float(text)
    except ValueError:
        return STRING
    return FRACTIONAL


def column(frame: pd.DataFrame, attribute: str, field: str) -> pd.Series:
    """The column an ``*_attribute`` names: a column name, else a 0-based column index."""
    if attribute in frame.columns:
        return frame[attribute]
    if _INT.fullmatch(attribute.strip()) and 0 <= int(attribute) < frame.shape[1]:
        return frame.iloc[:, int(attribute)]
    shown = ", ".join(map(str, list(frame.columns)[:12]))
    raise MonitorError(f"Environment.{field}: no column {attribute!r} in the dataset (columns: {shown})")
