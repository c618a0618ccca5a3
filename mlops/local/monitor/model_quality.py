"""Model quality: the metrics Model Monitor's model quality job writes to ``statistics.json`` for a problem
type, the constraints it suggests (``constraints.json``) and a dataset's violations of them.

The dataset holds the model's predictions beside the ground truth: ``inference_attribute`` (the predicted
label or value), ``probability_attribute`` (binary classification: the positive class's probability; a
prediction is ``probability >= probability_threshold_attribute``, else 0.5, when no inference attribute is
given) and ``ground_truth_attribute``. Each metric is ``{"value", "standard_deviation"}``; as documented, the
standard deviation is given only from 200 rows on, as the deviation of the metric over five random 80%
samples (seeded, so a run is reproducible), else ``"NaN"``. The suggested constraints take each metric's
baseline value as its threshold, with the operator that flags a worse model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops.local.monitor import MonitorError
from mlops.local.monitor.dataset import column

PROBLEM_TYPES = {
    "Regression": "regression",
    "BinaryClassification": "binary_classification",
    "MulticlassClassification": "multiclass_classification",
}
# metric -> the comparison that flags a worse model than the baseline's
LOWER_IS_WORSE, HIGHER_IS_WORSE = "LessThanThreshold", "GreaterThanThreshold"
SUGGESTED = {
    "regression": {
        "mae": HIGHER_IS_WORSE,
        "mse": HIGHER_IS_WORSE,
        "rmse": HIGHER_IS_WORSE,
        "r2": LOWER_IS_WORSE,
    },
    "binary_classification": {
        **{m: LOWER_IS_WORSE for m in ("recall", "precision", "accuracy", "true_positive_rate")},
        **{m: LOWER_IS_WORSE for m in ("true_negative_rate", "auc", "f0_5", "f1", "f2")},
        "false_positive_rate": HIGHER_IS_WORSE,
        "false_negative_rate": HIGHER_IS_WORSE,
    },
    "multiclass_classification": {
        m: LOWER_IS_WORSE
        for m in (
            "accuracy",
            "weighted_recall",
            "weighted_precision",
            "weighted_f0_5",
            "weighted_f1",
            "weighted_f2",
        )
    },
}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "LessThanThreshold": lambda v, t: v < t,
    "LessThanOrEqualToThreshold": lambda v, t: v <= t,
    "GreaterThanThreshold": lambda v, t: v > t,
    "GreaterThanOrEqualToThreshold": lambda v, t: v >= t,
}
STD_MIN_ROWS, STD_SAMPLES, STD_FRACTION = 200, 5, 0.8


def problem_key(problem_type: Any) -> str:
    if problem_type not in PROBLEM_TYPES:
        raise MonitorError(
            f"Environment.problem_type: {str(problem_type)[:60]!r} is not one of {', '.join(PROBLEM_TYPES)}"
        )
    return PROBLEM_TYPES[problem_type]


def _numbers(series: pd.Series, field: str) -> np.ndarray:
    values = pd.to_numeric(series, errors="coerce")
    bad = series[values.isna() & series.notna()]
    if len(bad):
        raise MonitorError(f"Environment.{field}: value {str(bad.iloc[0])[:40]!r} is not a number")
    return values.to_numpy(dtype=float)


def _labels(series: pd.Series) -> np.ndarray:
    """Labels as text, numbers written the same way whatever their source (``1``, ``1.0``)."""
    out = []
    for v in series.tolist():
        try:
            f = float(v)
            out.append(str(int(f)) if f.is_integer() else str(f))
        except (TypeError, ValueError):
            out.append(str(v).strip())
    return np.asarray(out, dtype=object)


def _columns(frame: pd.DataFrame, env: dict[str, Any], key: str) -> dict[str, np.ndarray]:
    """``truth`` and ``predicted`` (and ``probability``) with rows that miss any of them dropped."""
    truth_attr = env.get("ground_truth_attribute")
    if not truth_attr:
        raise MonitorError("Environment.ground_truth_attribute is required for a model quality check")
    pred_attr, prob_attr = env.get("inference_attribute"), env.get("probability_attribute")
    if not pred_attr and not (prob_attr and key == "binary_classification"):
        raise MonitorError("Environment.inference_attribute is required (or probability_attribute, binary)")
    cols = {"truth": column(frame, str(truth_attr), "ground_truth_attribute")}
    if pred_attr:
        cols["predicted"] = column(frame, str(pred_attr), "inference_attribute")
    if prob_attr and key == "binary_classification":
        cols["probability"] = column(frame, str(prob_attr), "probability_attribute")
    table = pd.DataFrame({k: v.reset_index(drop=True) for k, v in cols.items()}).dropna()
    if table.empty:
        raise MonitorError("the dataset has no row with both a prediction and a ground truth")
    out: dict[str, np.ndarray] = {}
    if "probability" in table:
        out["probability"] = _numbers(table["probability"], "probability_attribute")
    if key == "regression":
        out["truth"] = _numbers(table["truth"], "ground_truth_attribute")
        out["predicted"] = _numbers(table["predicted"], "inference_attribute")
        return out
    out["truth"] = _labels(table["truth"])
    if "predicted" in table:
        out["predicted"] = _labels(table["predicted"])
    else:
        threshold = float(env.get("probability_threshold_attribute") or 0.5)
        out["predicted"] = np.where(out["probability"] >= threshold, "1", "0").astype(object)
    return out


def _positive(labels: np.ndarray) -> str:
    """The positive class: ``1`` / ``true`` when present, else the larger of the labels."""
    seen = set(labels.tolist())
    for candidate in ("1", "true", "True", "yes"):
        if candidate in seen:
            return candidate
    return sorted(seen)[-1]


def _confusion(truth: np.ndarray, predicted: np.ndarray) -> dict[str, dict[str, int]]:
    labels = sorted(set(truth.tolist()) | set(predicted.tolist()))
    matrix = skm.confusion_matrix(truth, predicted, labels=labels)
    return {a: {p: int(matrix[i, j]) for j, p in enumerate(labels)} for i, a in enumerate(labels)}


def _metric_fns(key: str, cols: dict[str, np.ndarray]) -> dict[str, Callable[[np.ndarray], float]]:
    """metric -> function of the row indices it is computed on (all rows, or a sample)."""
    truth, pred = cols["truth"], cols["predicted"]
    if key == "regression":
        return {
            "mae": lambda i: skm.mean_absolute_error(truth[i], pred[i]),
            "mse": lambda i: skm.mean_squared_error(truth[i], pred[i]),
            "rmse": lambda i: math.sqrt(skm.mean_squared_error(truth[i], pred[i])),
            "r2": lambda i: skm.r2_score(truth[i], pred[i]) if len(set(truth[i].tolist())) > 1 else math.nan,
        }
    if key == "multiclass_classification":
        out: dict[str, Callable[[np.ndarray], float]] = {
            "accuracy": lambda i: skm.accuracy_score(truth[i], pred[i])
        }
        for name, fn in (("recall", skm.recall_score), ("precision", skm.precision_score)):
            out[f"weighted_{name}"] = lambda i, fn=fn: fn(
                truth[i], pred[i], average="weighted", zero_division=0
            )
        for name, beta in (("f0_5", 0.5), ("f1", 1.0), ("f2", 2.0)):
            out[f"weighted_{name}"] = lambda i, b=beta: skm.fbeta_score(
                truth[i], pred[i], beta=b, average="weighted", zero_division=0
            )
        return out
    pos = _positive(np.concatenate([truth, pred]))
    t, p = truth == pos, pred == pos

    def rate(num: np.ndarray, den: np.ndarray) -> Callable[[np.ndarray], float]:
        return lambda i: float((num[i] & den[i]).sum() / den[i].sum()) if den[i].sum() else math.nan

    out = {
        "recall": lambda i: skm.recall_score(t[i], p[i], zero_division=0),
        "precision": lambda i: skm.precision_score(t[i], p[i], zero_division=0),
        "accuracy": lambda i: skm.accuracy_score(t[i], p[i]),
        "true_positive_rate": rate(p, t),
        "true_negative_rate": rate(~p, ~t),
        "false_positive_rate": rate(p, ~t),
        "false_negative_rate": rate(~p, t),
    }
    if "probability" in cols:
        prob = cols["probability"]
        out["auc"] = lambda i: skm.roc_auc_score(t[i], prob[i]) if len(set(t[i].tolist())) > 1 else math.nan
    for name, beta in (("f0_5", 0.5), ("f1", 1.0), ("f2", 2.0)):
        out[name] = lambda i, b=beta: skm.fbeta_score(t[i], p[i], beta=b, zero_division=0)
    return out


def _json_number(x: float) -> float | str:
    return "NaN" if x is None or not math.isfinite(x) else float(x)


def statistics(frame: pd.DataFrame, env: dict[str, Any]) -> dict[str, Any]:
    """``statistics.json`` of a model quality job over ``frame``, as ``env`` (the job's Environment) asks."""
    key = problem_key(env.get("problem_type"))
    cols = _columns(frame, env, key)
    rows = len(cols["truth"])
    everything = np.arange(rows)
    rng = np.random.default_rng(0)
    samples = [
        rng.choice(rows, size=int(rows * STD_FRACTION), replace=False) for _ in range(STD_SAMPLES)
    ] if rows >= STD_MIN_ROWS else []  # fmt: skip
    found: dict[str, Any] = {}
    if key != "regression":
        found["confusion_matrix"] = _confusion(cols["truth"], cols["predicted"])
    for name, fn in _metric_fns(key, cols).items():
        value = float(fn(everything))
        spread = [float(fn(s)) for s in samples]
        std = float(np.std(spread)) if spread and all(math.isfinite(v) for v in spread) else math.nan
        found[name] = {"value": _json_number(value), "standard_deviation": _json_number(std)}
    return {"version": 0.0, "dataset": {"item_count": float(rows)}, f"{key}_metrics": found}


def constraints(stats: dict[str, Any]) -> dict[str, Any]:
    """The constraints the model quality job suggests from its baseline ``statistics.json``."""
    key = next((k for k in PROBLEM_TYPES.values() if f"{k}_metrics" in stats), None)
    if key is None:
        raise MonitorError("model quality statistics name no problem type's metrics")
    found = stats[f"{key}_metrics"]
    out = {
        name: {"threshold": found[name]["value"], "comparison_operator": op}
        for name, op in SUGGESTED[key].items()
        if name in found and isinstance(found[name].get("value"), int | float)
    }
    return {"version": 0.0, f"{key}_constraints": out}


def violations(stats: dict[str, Any], baseline_constraints: dict[str, Any]) -> list[dict[str, str]]:
    """Every metric of ``stats`` that its baseline constraint flags (``constraint_violations.json``)."""
    found: list[dict[str, str]] = []
    for key in PROBLEM_TYPES.values():
        wanted = baseline_constraints.get(f"{key}_constraints")
        if not isinstance(wanted, dict):
            continue
        metrics = stats.get(f"{key}_metrics")
        if not isinstance(metrics, dict):
            raise MonitorError(
                f"the baseline constraints are for {key}, the dataset's statistics are not (problem_type)"
            )
        for name, rule in wanted.items():
            op, threshold = (rule or {}).get("comparison_operator"), (rule or {}).get("threshold")
            value = (metrics.get(name) or {}).get("value")
            if op not in OPERATORS:
                raise MonitorError(f"baseline constraint {name}: unknown comparison_operator {op!r}")
            if not isinstance(value, int | float) or not isinstance(threshold, int | float):
                continue
            if OPERATORS[op](float(value), float(threshold)):
                found.append({
                    "constraint_check_type": op,
                    "description": f"Metric {name} with {value:.6g} was {op} '{threshold:.6g}'",
                    "metric_name": name,
                })  # fmt: skip
    return found
