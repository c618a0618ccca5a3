"""The model's answers for the dataset's rows, and Clarify's Kernel SHAP over them (``shap.KernelExplainer``).

:class:`Predictor` sends feature rows to the served model in batches as ``predictor.content_type`` (else
the dataset's type; CSV here) and reads its answers (``accept_type``: CSV, JSON or JSON Lines): a CSV line
or a JSON value per record (a JSON list, or an object with ``predictions``), one number per record unless
``predictor.label`` / ``predictor.probability`` name the index (CSV, JSON list) or key (JSON object) of the
prediction or score; a single CSV line with one value per record is read as one value per record.

SHAP (``methods.shap``): ``baseline`` (rows, or an S3 URI of a CSV of feature rows) else ``shap.kmeans`` of
the dataset with ``num_clusters`` (default 10) centres, as Clarify clusters when no baseline is given;
``num_samples`` (else shap's ``auto``), ``seed``, ``use_logit`` (the logit link), ``agg_method``
(``mean_abs`` default, ``median``, ``mean_sq``) and ``save_local_shap_values`` (``explanations_shap/out.csv``).
Not done here: text and image features, ``features_to_explain``, K-prototypes for categorical features
(non-numeric features are refused), Clarify's ``global_top_shap_text`` and the PDP method.
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlops.local.clarify import ClarifyError

BATCH_ROWS = 2000
AGGREGATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean_abs": lambda v: np.abs(v).mean(axis=0),
    "median": lambda v: np.median(v, axis=0),
    "mean_sq": lambda v: (v**2).mean(axis=0),
}


class Predictor:
    """``predict(rows) -> (n, k) array`` over ``invoke(payload, content_type, accept) -> body``."""

    def __init__(self, invoke, predictor: dict[str, Any], dataset_type: str):
        self.invoke = invoke
        self.content_type = predictor.get("content_type") or dataset_type
        self.accept = predictor.get("accept_type") or self.content_type
        if self.content_type != "text/csv":
            raise ClarifyError(
                f"predictor content_type {self.content_type!r} is not sent locally (text/csv is)"
            )
        self.pick = predictor.get("probability", predictor.get("label"))
        self.calls = 0

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=float)
        if rows.ndim == 1:
            rows = rows.reshape(1, -1)
        out = []
        for start in range(0, len(rows), BATCH_ROWS):
            batch = rows[start : start + BATCH_ROWS]
            buf = io.StringIO()
            np.savetxt(buf, batch, delimiter=",", fmt="%.10g")
            body = self.invoke(buf.getvalue().encode(), self.content_type, self.accept)
            self.calls += 1
            out.append(self._parse(body, len(batch)))
        return np.vstack(out)

    def _parse(self, body: bytes, n: int) -> np.ndarray:
        text = body.decode("utf-8", "replace").strip()
        try:
            if self.accept in ("application/json", "application/jsonlines") or text[:1] in "[{":
                records = _json_records(text, n)
            else:
                lines = [ln for ln in text.splitlines() if ln.strip()]
                if len(lines) == 1 and n > 1 and len(lines[0].split(",")) == n:
                    records = [[float(v)] for v in lines[0].split(",")]
                else:
                    records = [[float(v) for v in ln.split(",")] for ln in lines]
            values = [self._select(r) for r in records]
        except (ValueError, TypeError, KeyError, IndexError) as err:
            raise ClarifyError(
                f"the model's answer cannot be read as predictions: {text[:200]!r} ({err})"
            ) from err
        if len(values) != n:
            raise ClarifyError(f"the model answered {len(values)} predictions for {n} records")
        return np.asarray(values, dtype=float).reshape(n, -1)

    def _select(self, record: Any) -> Sequence[float]:
        if isinstance(record, dict):
            if self.pick is None:
                raise ClarifyError("the model answers JSON objects: set predictor.label or probability")
            record = record[self.pick]
        elif self.pick is not None and isinstance(record, list):
            record = record[int(self.pick)]
        return [float(v) for v in record] if isinstance(record, list) else [float(record)]


def _json_records(text: str, n: int) -> list[Any]:
    try:
        value = json.loads(text)
        if isinstance(value, dict) and "predictions" in value:
            value = value["predictions"]
        if isinstance(value, list) and (len(value) == n or n == 1 and len(value) != 1):
            return value if len(value) == n else [value]
        return [value]
    except json.JSONDecodeError:
        return [json.loads(ln) for ln in text.splitlines() if ln.strip()]


def kernel_shap(
    predict: Callable[[np.ndarray], np.ndarray],
    features: np.ndarray,
    names: list[str],
    shap_config: dict[str, Any],
    baseline_rows: np.ndarray | None,
    label_headers: list[str] | None = None,
) -> tuple[dict[str, Any], list[tuple[str, np.ndarray]]]:
    """``(explanations.kernel_shap of analysis.json, [(label, local SHAP values (n, m))])``."""
    with warnings.catch_warnings():  # shap's plotting colours warn on import with newer matplotlib
        warnings.simplefilter("ignore")
        import shap

    agg = shap_config.get("agg_method") or "mean_abs"
    if agg not in AGGREGATES:
        raise ClarifyError(f"methods.shap.agg_method {agg!r} is not one of {', '.join(AGGREGATES)}")
    for key in ("text_config", "image_config", "features_to_explain"):
        if shap_config.get(key):
            raise ClarifyError(f"methods.shap.{key} is not supported locally")
    seed = shap_config.get("seed")
    if seed is not None:
        np.random.seed(int(seed))
    if baseline_rows is None:
        k = min(int(shap_config.get("num_clusters") or 10), len(features))
        background: Any = shap.kmeans(features, k)
    else:
        if baseline_rows.shape[1] != features.shape[1]:
            raise ClarifyError(
                f"methods.shap.baseline rows have {baseline_rows.shape[1]} values; the model takes "
                f"{features.shape[1]} features"
            )
        background = baseline_rows
    link = "logit" if shap_config.get("use_logit") else "identity"
    explainer = shap.KernelExplainer(predict, background, link=link)
    nsamples = shap_config.get("num_samples") or "auto"
    with warnings.catch_warnings():  # shap's l1_reg feature selection (sklearn's LassoLarsIC) is chatty
        warnings.simplefilter("ignore")
        values = explainer.shap_values(features, nsamples=nsamples, silent=True)
    values = np.asarray(values, dtype=float)
    if values.ndim == 2:
        values = values[:, :, None]
    elif values.ndim == 3 and values.shape[0] != len(features):  # older shap: a list per output
        values = np.transpose(values, (1, 2, 0))
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    labels = []
    section: dict[str, Any] = {}
    for k in range(values.shape[2]):
        label = label_headers[k] if label_headers and k < len(label_headers) else f"label{k}"
        per_feature = AGGREGATES[agg](values[:, :, k])
        section[label] = {
            "global_shap_values": {n: float(v) for n, v in zip(names, per_feature, strict=True)},
            "expected_value": float(expected[k] if k < len(expected) else expected[0]),
        }
        labels.append((label, values[:, :, k]))
    return section, labels
