"""Training curves from a step's metric history, drawn by matplotlib as inline SVG.

One panel per metric, one line per host (a Tuning step: per trial and host); x is the epoch a line carried, else the n-th value on its host.
Text stays text (``svg.fonttype: none``) and the ids are salted by the step, so several plots can sit in
one page and the same history always draws the same bytes.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable
from typing import Any

PANEL_W, PANEL_H, MAX_COLUMNS, MAX_LEGEND = 3.6, 2.5, 3, 6


def _series(points: Iterable[dict[str, Any]]) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """``{metric: {host: (xs, ys)}}`` in recorded order; NaN values (None) are gaps, not points."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for p in points:
        if p["value"] is None:
            continue
        xs, ys = out.setdefault(p["name"], {}).setdefault(p["host"], ([], []))
        xs.append(p["epoch"] if p["epoch"] is not None else p["seq"])
        ys.append(p["value"])
    return out


def curves_svg(step: str, points: list[dict[str, Any]]) -> str | None:
    """The SVG (a string, no XML prolog) of the step's curves; None when it has no value to draw."""
    series = _series(points)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    names = sorted(series)
    columns = min(MAX_COLUMNS, len(names))
    rows = math.ceil(len(names) / columns)
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"mlops-{step}", "font.size": 8}):
        fig, axes = plt.subplots(rows, columns, figsize=(PANEL_W * columns, PANEL_H * rows), squeeze=False)
        try:
            for ax, name in zip(axes.flat, names, strict=False):
                epochs = all(p["epoch"] is not None for p in points if p["name"] == name)
                for host, (xs, ys) in sorted(series[name].items()):
                    ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, label=host)
                many = len(series[name]) > MAX_LEGEND  # a tuning step's trials: too many to name
                ax.set_title(f"{name} ({len(series[name])} series)" if many else name)
                ax.set_xlabel("epoch" if epochs else "value #")
                ax.grid(True, alpha=0.3)
                if 1 < len(series[name]) <= MAX_LEGEND:
                    ax.legend(fontsize=7)
            for ax in list(axes.flat)[len(names) :]:
                ax.set_visible(False)
            fig.tight_layout()
            buf = io.StringIO()
            fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        finally:
            plt.close(fig)
    text = buf.getvalue()
    # matplotlib's RDF metadata block says only that it is an image: not worth its namespaces
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, count=1, flags=re.DOTALL)
    return text[text.index("<svg") :]
