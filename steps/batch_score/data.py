"""Seed rows for a local batch-score run: scikit-learn's bundled digits as the model server reads CSV.

64 pixel values per line, no header and no label (``code/inference.py``'s ``text/csv`` contract).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_scoring_csv(path: str | os.PathLike, rows: int | None = None) -> int:
    """Write the first ``rows`` digits (all 1797 by default) atomically; returns how many were written."""
    from sklearn.datasets import load_digits

    pixels = load_digits().data.astype(int)[:rows]
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w") as out:
            out.writelines(",".join(map(str, row)) + "\n" for row in pixels)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(pixels)
