"""The analysis configuration (``analysis_config.json``) and the dataset it describes.

What is read, as the Clarify docs define it: ``dataset_type`` (``text/csv`` only here), ``headers`` (else
``column_<i>`` names are made up: Clarify documents that it generates headers, not how it names them),
``label`` (name or index), ``label_values_or_threshold``, ``facet`` (a list of ``name_or_index`` with an
optional ``value_or_threshold``), ``group_variable``, ``excluded_columns``, ``probability_threshold``,
``methods`` and ``predictor``.

Values or a threshold: a label (or facet) is compared against a *threshold* (positive / sensitive when
strictly greater, the SDK's "exclusive lower bound") when its column is numeric, one number is given and
that number is not one of the column's values or the column has more than ``CONTINUOUS_MIN_VALUES``
distinct values (Clarify decides continuous vs categorical from the data; this is the local rule); it is
compared by *membership* otherwise. A facet without ``value_or_threshold`` gives one group per value.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops.local.clarify import ClarifyError

CONTINUOUS_MIN_VALUES = 10


@dataclass
class Facet:
    name: str
    values: list[Any] | None  # None: one group per value of the column


@dataclass
class AnalysisConfig:
    raw: dict[str, Any]
    dataset_type: str
    headers: list[str] | None
    label: str | int | None
    label_values: list[Any]
    facets: list[Facet]
    group_variable: str | int | None
    excluded: list[str | int]
    methods: dict[str, Any]
    predictor: dict[str, Any]
    probability_threshold: float | None

    @classmethod
    def parse(cls, raw: Any) -> AnalysisConfig:
        if not isinstance(raw, Mapping):
            raise ClarifyError("analysis_config.json must be a JSON object")
        dataset_type = raw.get("dataset_type", "text/csv")
        if dataset_type != "text/csv":
            raise ClarifyError(
                f"analysis_config.json dataset_type {dataset_type!r} is not analysed locally (text/csv is)"
            )
        facets = []
        for i, f in enumerate(raw.get("facet") or []):
            if not isinstance(f, Mapping) or "name_or_index" not in f:
                raise ClarifyError(f"analysis_config.json facet[{i}] needs a name_or_index")
            values = f.get("value_or_threshold")
            facets.append(Facet(f["name_or_index"], list(values) if values is not None else None))
        threshold = raw.get("probability_threshold")
        return cls(
            raw=dict(raw),
            dataset_type=dataset_type,
            headers=list(raw["headers"]) if raw.get("headers") else None,
            label=raw.get("label"),
            label_values=list(raw.get("label_values_or_threshold") or []),
            facets=facets,
            group_variable=raw.get("group_variable"),
            excluded=list(raw.get("excluded_columns") or []),
            methods=dict(raw.get("methods") or {}),
            predictor=dict(raw.get("predictor") or {}),
            probability_threshold=float(threshold) if threshold is not None else None,
        )


@dataclass
class Dataset:
    """The dataset's columns by name; ``features`` is what the model is sent (label and excluded dropped)."""

    frame: pd.DataFrame
    label: str | None
    features: list[str]
    group: str | None = None
    facet_columns: list[str] = field(default_factory=list)


def read_csv_objects(paths: Sequence[Any], headers: list[str] | None) -> pd.DataFrame:
    """The CSV objects under the dataset's S3 prefix, in key order, as one frame (no header row unless
    ``headers`` is absent and the first line is not numeric: then that line names the columns)."""
    frames = []
    for path in paths:
        text = path.read_text()
        if not text.strip():
            continue
        frames.append(pd.read_csv(io.StringIO(text), header=None))
    if not frames:
        raise ClarifyError("the dataset input holds no CSV rows")
    frame = pd.concat(frames, ignore_index=True)
    if headers:
        if len(headers) != frame.shape[1]:
            raise ClarifyError(
                f"analysis_config.json headers name {len(headers)} columns; the dataset has {frame.shape[1]}"
            )
        frame.columns = headers
    else:
        frame.columns = [f"column_{i}" for i in range(frame.shape[1])]
    return frame


def column(frame: pd.DataFrame, name_or_index: str | int | None, what: str) -> str:
    if isinstance(name_or_index, bool) or name_or_index is None:
        raise ClarifyError(f"analysis_config.json {what} is missing")
    if isinstance(name_or_index, int):
        if not 0 <= name_or_index < frame.shape[1]:
            raise ClarifyError(
                f"analysis_config.json {what} index {name_or_index} is outside the dataset's "
                f"{frame.shape[1]} columns"
            )
        return str(frame.columns[name_or_index])
    if name_or_index not in frame.columns:
        raise ClarifyError(f"analysis_config.json {what} {name_or_index!r} is not a column of the dataset")
    return str(name_or_index)


def dataset(config: AnalysisConfig, frame: pd.DataFrame, *, needs_label: bool) -> Dataset:
    label = column(frame, config.label, "label") if config.label is not None or needs_label else None
    excluded = {column(frame, c, "excluded_columns entry") for c in config.excluded}
    group = (
        column(frame, config.group_variable, "group_variable") if config.group_variable is not None else None
    )
    facets = [column(frame, f.name, "facet name_or_index") for f in config.facets]
    features = [c for c in frame.columns if c != label and c not in excluded]
    return Dataset(frame, label, [str(c) for c in features], group, facets)


def is_threshold(series: pd.Series, values: list[Any]) -> bool:
    if len(values) != 1 or isinstance(values[0], bool) or not isinstance(values[0], int | float):
        return False
    if not pd.api.types.is_numeric_dtype(series):
        return False
    distinct = series.dropna().unique()
    return float(values[0]) not in {float(v) for v in distinct} or len(distinct) > CONTINUOUS_MIN_VALUES


def member_mask(series: pd.Series, values: list[Any]) -> np.ndarray:
    """Rows whose value is one of ``values`` (or above the threshold): the label's positive outcome, the
    facet's sensitive group (``d``)."""
    if is_threshold(series, values):
        return (series.astype(float) > float(values[0])).to_numpy()
    wanted = {str(v) for v in values}
    if pd.api.types.is_numeric_dtype(series):
        floats = {float(v) for v in values if _is_number(v)}
        return series.map(lambda x: float(x) in floats or str(x) in wanted).to_numpy(dtype=bool)
    return series.astype(str).isin(wanted).to_numpy()


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def facet_groups(series: pd.Series, facet: Facet) -> list[tuple[str, np.ndarray]]:
    """``(value_or_threshold as analysis.json writes it, mask of facet d)`` for each group of a facet."""
    if facet.values:
        return [(",".join(_text(v) for v in facet.values), member_mask(series, facet.values))]
    # binary or categorical without values: one group per value (each against all the others)
    distinct = sorted(series.dropna().unique(), key=lambda v: (str(type(v)), v))
    return [(_text(v), (series == v).to_numpy()) for v in distinct]


def _text(v: Any) -> str:
    return str(v.item() if isinstance(v, np.generic) else v)
