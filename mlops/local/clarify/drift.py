"""The drift check of a ClarifyCheck step: the new ``analysis.json`` against the baseline's (its
constraints file is an ``analysis.json`` too), by Model Monitor's documented rules, as
``constraint_violations.json`` would list them.

- Bias (``bias_drift_check``): a metric of a facet value is a violation when its value is worse than the
  baseline's, i.e. farther from the balanced value: ``|value| > |baseline|`` (the docs' DPPL example: 0.1
  against 0.2 passes, -0.3 fails). DI's balanced value is 1, so for DI it is ``|value - 1| > |baseline - 1|``
  (the docs state the rule for metrics balanced at 0 only; this is the same rule about DI's own balance).
  A metric, facet or value the baseline does not have, or a ``null`` value, is not compared.
- Feature attribution (``feature_attribution_drift_check``): for each label, the nDCG of the new global SHAP
  ranking against the baseline's attributions, ``DCG / iDCG`` with ``DCG = sum_i a(f'_i) / log2(i + 1)``
  over the features ``f'`` sorted by their new values and ``iDCG`` the same over the baseline's own order,
  ``a`` the baseline's global SHAP values; a score under ``NDCG_THRESHOLD`` (0.9) is a violation.
"""

from __future__ import annotations

import math
from typing import Any

NDCG_THRESHOLD = 0.9
SECTIONS = {"DATA_BIAS": "pre_training_bias_metrics", "MODEL_BIAS": "post_training_bias_metrics"}


def _distance(name: str, value: float) -> float:
    return abs(value - 1.0) if name == "DI" else abs(value)


def bias_violations(current: dict[str, Any], baseline: dict[str, Any], section: str) -> list[dict[str, Any]]:
    now, then = current.get(section) or {}, baseline.get(section) or {}
    base: dict[tuple[str, str, str], float] = {}
    for facet, groups in (then.get("facets") or {}).items():
        for group in groups or []:
            for m in group.get("metrics") or []:
                if isinstance(m.get("value"), int | float):
                    base[(facet, str(group.get("value_or_threshold")), m["name"])] = float(m["value"])
    found = []
    for facet, groups in (now.get("facets") or {}).items():
        for group in groups or []:
            value_or_threshold = str(group.get("value_or_threshold"))
            for m in group.get("metrics") or []:
                limit = base.get((facet, value_or_threshold, m["name"]))
                value = m.get("value")
                if limit is None or not isinstance(value, int | float):
                    continue
                if _distance(m["name"], value) > _distance(m["name"], limit) + 1e-12:
                    found.append({
                        "facet": facet, "facet_value": value_or_threshold, "metric_name": m["name"],
                        "constraint_check_type": "bias_drift_check",
                        "description": f"Value {value} does not meet the constraint requirement "
                        f"(baseline {limit})",
                    })  # fmt: skip
    return found


def ndcg(current: dict[str, float], baseline: dict[str, float]) -> float:
    features = [f for f in baseline if f in current]
    if not features:
        return 0.0

    def dcg(order: list[str]) -> float:
        return sum(baseline[f] / math.log2(i + 2) for i, f in enumerate(order))

    ideal = dcg(sorted(features, key=lambda f: baseline[f], reverse=True))
    if ideal == 0:
        return 1.0
    return dcg(sorted(features, key=lambda f: current[f], reverse=True)) / ideal


def attribution_violations(current: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    now = ((current.get("explanations") or {}).get("kernel_shap")) or {}
    then = ((baseline.get("explanations") or {}).get("kernel_shap")) or {}
    found = []
    for label, entry in now.items():
        base = (then.get(label) or {}).get("global_shap_values")
        if not base:
            continue
        score = ndcg(entry.get("global_shap_values") or {}, base)
        if score < NDCG_THRESHOLD:
            found.append({
                "label": label, "metric_name": "shap", "constraint_check_type": "feature_attribution_drift_check",
                "description": f"Feature attribution drift {score:.4f} exceeds threshold {NDCG_THRESHOLD}",
            })  # fmt: skip
    return found


def violations(check_type: str, current: dict[str, Any], baseline: dict[str, Any]) -> list[dict[str, Any]]:
    if check_type in SECTIONS:
        return bias_violations(current, baseline, SECTIONS[check_type])
    return attribution_violations(current, baseline)


def describe(v: dict[str, Any]) -> str:
    if v["constraint_check_type"] == "bias_drift_check":
        return f"{v['metric_name']} of facet {v['facet']}={v['facet_value']}: {v['description']}"
    return f"shap of {v['label']}: {v['description']}"
