"""Bias metrics by the formulas of the SageMaker Clarify docs, per facet group (``d``, the sensitive group
of the facet, against ``a``, every other row).

Pre-training (labels ``y`` only; ``q`` the share of positive labels, ``n`` the row count):

- CI   = (n_a - n_d) / (n_a + n_d)
- DPL  = q_a - q_d
- KL   = sum_y P_a(y) log(P_a(y) / P_d(y));  JS = (KL(P_a, P) + KL(P_d, P)) / 2 with P = (P_a + P_d) / 2
- LP   = sqrt(sum_y (P_a(y) - P_d(y))^2);  TVD = sum_y |P_a(y) - P_d(y)| / 2;  KS = max_y |P_a(y) - P_d(y)|
- CDDL = sum_i n_i DD_i / n over the ``group_variable``'s groups i, DD = n_d(0)/n(0) - n_d(1)/n(1)
  (facet d's share of the rejected minus its share of the accepted); only with a ``group_variable``.

  P is the distribution of the outcome (positive / negative, as ``label_values_or_threshold`` makes it).

Post-training (``ŷ`` the predicted label, made positive by the same rule as the label, or by
``probability_threshold`` when the model returns a score; TP/FP/TN/FN per group):

- DPPL = q̂_a - q̂_d;  DI = q̂_d / q̂_a
- DCA  = c_a - c_d with c = n(1) / n̂(1);  DCR = r_d - r_a with r = n(0) / n̂(0)
- RD   = TP_a/(TP_a+FN_a) - TP_d/(TP_d+FN_d);  DAR = TP_a/(TP_a+FP_a) - TP_d/(TP_d+FP_d)
- DRR  = TN_d/(TN_d+FN_d) - TN_a/(TN_a+FN_a);  AD = ACC_a - ACC_d;  TE = FN_d/FP_d - FN_a/FP_a
- CDDPL: CDDL with ŷ; GE (generalized entropy, alpha 2, of b = ŷ - y + 1 over the whole dataset)

A ratio whose denominator is 0 is ``null``. Not computed here (refused when asked by name, left out of
``"all"``): FT (flip test: Clarify's k-nearest-neighbour counterfactuals) and SD (specificity difference).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mlops.local.clarify import ClarifyError

PRE_TRAINING = {
    "CDDL": "Conditional Demographic Disparity in Labels (CDDL)",
    "CI": "Class Imbalance (CI)",
    "DPL": "Difference in Positive Proportions in Labels (DPL)",
    "JS": "Jensen-Shannon Divergence (JS)",
    "KL": "Kullback-Liebler Divergence (KL)",
    "KS": "Kolmogorov-Smirnov Distance (KS)",
    "LP": "L-p Norm (LP)",
    "TVD": "Total Variation Distance (TVD)",
}
POST_TRAINING = {
    "AD": "Accuracy Difference (AD)",
    "CDDPL": "Conditional Demographic Disparity in Predicted Labels (CDDPL)",
    "DAR": "Difference in Acceptance Rates (DAR)",
    "DCA": "Difference in Conditional Acceptance (DCA)",
    "DCR": "Difference in Conditional Rejection (DCR)",
    "DI": "Disparate Impact (DI)",
    "DPPL": "Difference in Positive Proportions in Predicted Labels (DPPL)",
    "DRR": "Difference in Rejection Rates (DRR)",
    "GE": "Generalized Entropy (GE)",
    "RD": "Recall Difference (RD)",
    "TE": "Treatment Equality (TE)",
}
NOT_LOCAL = {"FT": "Flip Test (FT)", "SD": "Specificity Difference (SD)"}


def _ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def _minus(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None else x - y


def _dist(y: np.ndarray) -> np.ndarray:
    n = len(y)
    q = y.sum() / n if n else 0.0
    return np.array([q, 1.0 - q])


def _kl(p: np.ndarray, q: np.ndarray) -> float | None:
    total = 0.0
    for pi, qi in zip(p, q, strict=True):
        if pi == 0:
            continue
        if qi == 0:
            return None  # infinite
        total += pi * math.log(pi / qi)
    return total


def _cdd(y: np.ndarray, d: np.ndarray, groups: np.ndarray | None) -> float | None:
    if groups is None:
        return None
    n, total = len(y), 0.0
    for g in np.unique(groups):
        in_g = groups == g
        rejected, accepted = in_g & ~y, in_g & y
        dd = _minus(
            _ratio((rejected & d).sum(), rejected.sum()), _ratio((accepted & d).sum(), accepted.sum())
        )
        if dd is None:
            continue  # a group without rejections or acceptances has no disparity to weigh
        total += in_g.sum() * dd
    return total / n if n else None


def pre_training(y: np.ndarray, d: np.ndarray, groups: np.ndarray | None) -> dict[str, float | None]:
    a = ~d
    n_a, n_d = a.sum(), d.sum()
    p_a, p_d = _dist(y[a]), _dist(y[d])
    mid = (p_a + p_d) / 2
    kl_a, kl_d = _kl(p_a, mid), _kl(p_d, mid)
    return {
        "CI": _ratio(n_a - n_d, n_a + n_d),
        "DPL": _minus(_ratio(y[a].sum(), n_a), _ratio(y[d].sum(), n_d)) if n_a and n_d else None,
        "KL": _kl(p_a, p_d) if n_a and n_d else None,
        "JS": (kl_a + kl_d) / 2 if n_a and n_d and kl_a is not None and kl_d is not None else None,
        "LP": float(np.sqrt(((p_a - p_d) ** 2).sum())) if n_a and n_d else None,
        "TVD": float(np.abs(p_a - p_d).sum() / 2) if n_a and n_d else None,
        "KS": float(np.abs(p_a - p_d).max()) if n_a and n_d else None,
        "CDDL": _cdd(y, d, groups),
    }


def post_training(
    y: np.ndarray, yhat: np.ndarray, d: np.ndarray, groups: np.ndarray | None
) -> dict[str, float | None]:
    a = ~d

    def counts(m: np.ndarray) -> dict[str, int]:
        return {
            "TP": int((m & y & yhat).sum()), "FP": int((m & ~y & yhat).sum()),
            "TN": int((m & ~y & ~yhat).sum()), "FN": int((m & y & ~yhat).sum()), "n": int(m.sum()),
        }  # fmt: skip

    ca, cd = counts(a), counts(d)

    def share(c):  # q̂: predicted positives over rows
        return _ratio(c["TP"] + c["FP"], c["n"])

    def acceptance(c):  # c = n(1) / n̂(1)
        return _ratio(c["TP"] + c["FN"], c["TP"] + c["FP"])

    def rejection(c):  # r = n(0) / n̂(0)
        return _ratio(c["TN"] + c["FP"], c["TN"] + c["FN"])

    def recall(c):
        return _ratio(c["TP"], c["TP"] + c["FN"])

    def precision(c):
        return _ratio(c["TP"], c["TP"] + c["FP"])

    def npv(c):
        return _ratio(c["TN"], c["TN"] + c["FN"])

    def accuracy(c):
        return _ratio(c["TP"] + c["TN"], c["n"])

    def fn_over_fp(c):
        return _ratio(c["FN"], c["FP"])

    q_a, q_d = share(ca), share(cd)
    b = yhat.astype(float) - y.astype(float) + 1.0
    mu = b.mean() if len(b) else 0.0
    return {
        "DPPL": _minus(q_a, q_d),
        "DI": _ratio(q_d, q_a) if q_a is not None and q_d is not None else None,
        "DCA": _minus(acceptance(ca), acceptance(cd)),
        "DCR": _minus(rejection(cd), rejection(ca)),
        "RD": _minus(recall(ca), recall(cd)),
        "DAR": _minus(precision(ca), precision(cd)),
        "DRR": _minus(npv(cd), npv(ca)),
        "AD": _minus(accuracy(ca), accuracy(cd)),
        "TE": _minus(fn_over_fp(cd), fn_over_fp(ca)),
        "CDDPL": _cdd(yhat, d, groups),
        "GE": float(((b / mu) ** 2 - 1).sum() / (len(b) * 2)) if mu else None,
    }


def selected(methods: Any, known: dict[str, str], section: str) -> list[str]:
    """The metric names ``methods`` asks for (``"all"`` or a list): every one computed here for "all"."""
    if methods in (None, "all"):
        return sorted(known)
    if isinstance(methods, str):
        methods = [methods]
    if not isinstance(methods, list):
        raise ClarifyError(f"analysis_config.json methods.{section}.methods must be 'all' or a list")
    for m in methods:
        if m in NOT_LOCAL:
            raise ClarifyError(f"methods.{section}: {m} ({NOT_LOCAL[m]}) is not computed locally")
        if m not in known:
            raise ClarifyError(f"methods.{section}: unknown metric {m!r} (known: {', '.join(sorted(known))})")
    return sorted(set(methods))


def report(
    label: str,
    label_values: Sequence[Any],
    facets: list[tuple[str, list[tuple[str, np.ndarray]]]],
    names: list[str],
    descriptions: dict[str, str],
    compute: Callable[[np.ndarray], dict[str, float | None]],
) -> dict[str, Any]:
    """One ``pre_training_bias_metrics`` / ``post_training_bias_metrics`` section of analysis.json."""
    out: dict[str, Any] = {
        "label": label,
        "label_value_or_threshold": ",".join(str(v) for v in label_values),
        "facets": {},
    }
    for facet, groups in facets:
        entries = []
        for value, mask in groups:
            values = compute(mask)
            metrics = [
                {"name": n, "description": descriptions[n], "value": _clean(values.get(n))} for n in names
            ]
            entries.append({"value_or_threshold": value, "metrics": metrics})
        out["facets"][facet] = entries
    return out


def _clean(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)
