"""Data quality: Model Monitor's ``statistics.json`` and ``constraints.json`` of a dataset, and the violations
of a dataset against a baseline (``constraint_violations.json``), in the documented formats.

Where this differs from the analyzer image, on purpose:

- The distribution of a numeric feature is exact, not a KLL sketch: ``distribution.kll.buckets`` are 10
  equal-width buckets between min and max with their exact counts, and ``sketch.data`` holds one level with
  the sorted values (``k`` = 2048 evenly spaced order statistics when there are more). A sketch from the
  real analyzer is read back with its levels weighted 2^level, as KLL's are.
- ``std_dev`` is the population standard deviation (Deequ's).
- A String feature gets ``string_constraints.domains`` when it has at most 20 distinct values.
- ``baseline_drift_check`` is the largest distance between the baseline's and the dataset's cumulative
  distributions (numeric features; ``comparison_method`` Simple and Robust alike) or category frequencies
  (String features, L-infinity), against ``comparison_threshold`` / ``categorical_comparison_threshold``.
- ``num_constraints.is_non_negative`` is written, as the analyzer writes it, but not checked: no documented
  violation type covers it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops.local.monitor.dataset import FRACTIONAL, INTEGRAL, STRING, UNKNOWN, value_kind

BUCKETS = 10
SKETCH_K = 2048
MAX_DOMAIN = 20
MAX_CATEGORIES = 1000
MONITORING_CONFIG: dict[str, Any] = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    "datatype_check_threshold": 1.0,
    "domain_content_threshold": 1.0,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
        "categorical_comparison_threshold": 0.1,
        "categorical_drift_method": "LInfinity",
    },
}


@dataclass
class Feature:
    """One column as the analyzer sees it: the type of each present value, and the values."""

    name: str
    rows: int
    kinds: Counter = field(default_factory=Counter)  # Integral / Fractional / String -> count
    numbers: np.ndarray = field(default_factory=lambda: np.array([]))  # every numeric value present
    strings: Counter = field(default_factory=Counter)  # every present value as text -> count

    @property
    def present(self) -> int:
        return sum(self.kinds.values())

    @property
    def inferred_type(self) -> str:
        if not self.kinds:
            return UNKNOWN
        if self.kinds[STRING]:
            return STRING
        return FRACTIONAL if self.kinds[FRACTIONAL] else INTEGRAL

    def conforming(self, expected: str) -> float:
        """The share of present values that are of ``expected`` type (an Integral is a valid Fractional)."""
        if not self.present or expected in (STRING, UNKNOWN):
            return 1.0
        ok = self.kinds[INTEGRAL] + (self.kinds[FRACTIONAL] if expected == FRACTIONAL else 0)
        return ok / self.present


def profile(frame: pd.DataFrame) -> list[Feature]:
    out = []
    for name in frame.columns:
        feature = Feature(str(name), len(frame))
        numbers = []
        for value in frame[name].tolist():
            kind = value_kind(value)
            if kind is None:
                continue
            feature.kinds[kind] += 1
            text = str(value).strip()
            feature.strings[text] += 1
            if kind != STRING:
                numbers.append(float(text) if isinstance(value, str) else float(value))
        feature.numbers = np.asarray(numbers, dtype=float)
        out.append(feature)
    return out


# ------------------------------------------------------------------------------------------ statistics


def _buckets(values: np.ndarray) -> list[dict[str, float]]:
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        return [{"lower_bound": lo, "upper_bound": hi, "count": float(len(values))}]
    counts, edges = np.histogram(values, bins=BUCKETS, range=(lo, hi))
    return [
        {"lower_bound": float(edges[i]), "upper_bound": float(edges[i + 1]), "count": float(counts[i])}
        for i in range(BUCKETS)
    ]


def _sketch(values: np.ndarray) -> list[float]:
    ordered = np.sort(values)
    if len(ordered) > SKETCH_K:
        ordered = ordered[np.linspace(0, len(ordered) - 1, SKETCH_K).round().astype(int)]
    return [float(v) for v in ordered]


def feature_statistics(feature: Feature) -> dict[str, Any]:
    common = {"num_present": feature.present, "num_missing": feature.rows - feature.present}
    kind = feature.inferred_type
    out: dict[str, Any] = {"name": feature.name, "inferred_type": kind}
    if kind in (INTEGRAL, FRACTIONAL):
        values = feature.numbers
        out["numerical_statistics"] = {
            "common": common,
            "mean": float(values.mean()),
            "sum": float(values.sum()),
            "std_dev": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "distribution": {
                "kll": {
                    "buckets": _buckets(values),
                    "sketch": {"parameters": {"c": 0.64, "k": float(SKETCH_K)}, "data": [_sketch(values)]},
                }
            },
        }
    else:
        top = feature.strings.most_common(MAX_CATEGORIES)
        out["string_statistics"] = {
            "common": common,
            "distinct_count": float(len(feature.strings)),
            "distribution": {"categorical": {"buckets": [{"value": v, "count": float(c)} for v, c in top]}},
        }
    return out


def statistics(features: list[Feature]) -> dict[str, Any]:
    rows = features[0].rows if features else 0
    return {
        "version": 0.0,
        "dataset": {"item_count": float(rows)},
        "features": [feature_statistics(f) for f in features],
    }


def constraints(features: list[Feature]) -> dict[str, Any]:
    """The constraints the analyzer suggests for a baseline dataset."""
    out = []
    for feature in features:
        kind = feature.inferred_type
        item: dict[str, Any] = {
            "name": feature.name,
            "inferred_type": kind,
            "completeness": feature.present / feature.rows if feature.rows else 0.0,
        }
        if kind in (INTEGRAL, FRACTIONAL):
            item["num_constraints"] = {"is_non_negative": bool((feature.numbers >= 0).all())}
        elif kind == STRING and len(feature.strings) <= MAX_DOMAIN:
            item["string_constraints"] = {"domains": sorted(feature.strings)}
        out.append(item)
    return {"version": 0.0, "features": out, "monitoring_config": MONITORING_CONFIG}


# ------------------------------------------------------------------------------------------ violations


def _config(base: dict[str, Any], overrides: Any) -> dict[str, Any]:
    merged = {**base, "distribution_constraints": dict(base.get("distribution_constraints") or {})}
    if isinstance(overrides, dict):
        for key, value in overrides.items():
            if key == "distribution_constraints" and isinstance(value, dict):
                merged["distribution_constraints"].update(value)
            else:
                merged[key] = value
    return merged


def _baseline_sample(stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(values, weights)`` of a baseline feature's distribution: its sketch, else its bucket midpoints."""
    kll = ((stats.get("numerical_statistics") or {}).get("distribution") or {}).get("kll") or {}
    levels = (kll.get("sketch") or {}).get("data") or []
    values, weights = [], []
    for level, items in enumerate(levels):
        for v in items or []:
            values.append(float(v))
            weights.append(float(2**level))
    if not values:
        for bucket in kll.get("buckets") or []:
            values.append((float(bucket["lower_bound"]) + float(bucket["upper_bound"])) / 2)
            weights.append(float(bucket["count"]))
    if not values or sum(weights) <= 0:
        return None
    return np.asarray(values), np.asarray(weights)


def _cdf_distance(base: tuple[np.ndarray, np.ndarray], current: np.ndarray) -> float:
    values, weights = base
    order = np.argsort(values)
    values, cum = values[order], np.cumsum(weights[order]) / weights.sum()
    current = np.sort(current)
    points = np.union1d(values, current)
    base_cdf = np.concatenate([[0.0], cum])[np.searchsorted(values, points, side="right")]
    cur_cdf = np.searchsorted(current, points, side="right") / len(current)
    return float(np.abs(base_cdf - cur_cdf).max())


def _category_distance(stats: dict[str, Any], feature: Feature) -> float | None:
    buckets = ((stats.get("string_statistics") or {}).get("distribution") or {}).get("categorical") or {}
    base = {str(b["value"]): float(b["count"]) for b in buckets.get("buckets") or []}
    total = sum(base.values())
    if not total or not feature.present:
        return None
    keys = set(base) | set(feature.strings)
    return max(abs(base.get(k, 0.0) / total - feature.strings.get(k, 0) / feature.present) for k in keys)


def _pct(x: float) -> str:
    return f"{100 * x:.4g}%"


def violations(
    features: list[Feature], baseline_constraints: dict[str, Any], baseline_statistics: dict[str, Any] | None
) -> list[dict[str, str]]:
    """Every documented violation of the dataset against the baseline (``constraint_violations.json``'s
    ``violations``): missing_column_check, extra_column_check, data_type_check, completeness_check,
    categorical_values_check and baseline_drift_check."""
    base_config = _config(MONITORING_CONFIG, baseline_constraints.get("monitoring_config"))
    if base_config.get("evaluate_constraints") == "Disabled":
        return []
    expected = {
        str(c.get("name")): c for c in baseline_constraints.get("features") or [] if isinstance(c, dict)
    }
    base_stats = {
        str(s.get("name")): s
        for s in (baseline_statistics or {}).get("features") or []
        if isinstance(s, dict)
    }
    current = {f.name: f for f in features}
    found: list[dict[str, str]] = []

    def add(name: str, check: str, description: str) -> None:
        found.append({"feature_name": name, "constraint_check_type": check, "description": description})

    for name in expected:
        if name not in current:
            add(name, "missing_column_check", f"Baseline column {name} is missing from the dataset")
    for name in current:
        if name not in expected:
            add(name, "extra_column_check", f"Column {name} is not in the baseline")
    for name, want in expected.items():
        feature = current.get(name)
        if feature is None:
            continue
        config = _config(base_config, want.get("monitoringConfigOverrides"))
        kind = str(want.get("inferred_type") or UNKNOWN)
        share = feature.conforming(kind)
        type_threshold = float(config.get("datatype_check_threshold", 1.0))
        if share < type_threshold:
            add(
                name, "data_type_check",
                f"Data type match requirement is not met: expected {kind} for at least {_pct(type_threshold)} of "
                f"the values, observed {_pct(share)} ({feature.inferred_type} inferred)",
            )  # fmt: skip
        completeness = want.get("completeness")
        observed = feature.present / feature.rows if feature.rows else 0.0
        if isinstance(completeness, int | float) and observed < float(completeness) - 1e-12:
            add(
                name, "completeness_check",
                f"Data completeness requirement is not met: expected at least {_pct(float(completeness))} "
                f"present, observed {_pct(observed)} ({feature.rows - feature.present} of {feature.rows} "
                f"missing)",
            )  # fmt: skip
        domains = (want.get("string_constraints") or {}).get("domains")
        if isinstance(domains, list) and feature.present:
            allowed = {str(d) for d in domains}
            inside = sum(c for v, c in feature.strings.items() if v in allowed) / feature.present
            threshold = float(config.get("domain_content_threshold", 1.0))
            if inside < threshold:
                unknown = sorted(v for v in feature.strings if v not in allowed)[:5]
                add(
                    name, "categorical_values_check",
                    f"Value list not within the baseline domain: expected at least {_pct(threshold)} of the "
                    f"values in it, observed {_pct(inside)} (unknown values: {', '.join(unknown)})",
                )  # fmt: skip
        drift = config.get("distribution_constraints") or {}
        base = base_stats.get(name)
        if base is None or drift.get("perform_comparison") == "Disabled" or share < type_threshold:
            continue
        if kind in (INTEGRAL, FRACTIONAL) and len(feature.numbers):
            sample = _baseline_sample(base)
            distance = _cdf_distance(sample, feature.numbers) if sample else None
            limit = float(drift.get("comparison_threshold", 0.1))
        elif kind == STRING:
            distance = _category_distance(base, feature)
            limit = float(drift.get("categorical_comparison_threshold", 0.1))
        else:
            distance = None
        if distance is not None and distance > limit:
            add(
                name, "baseline_drift_check",
                f"Baseline drift distance: {distance:.4g} exceeds threshold: {limit:.4g}",
            )  # fmt: skip
    return found
