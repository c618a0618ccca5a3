"""The digits dataset as CSV: scikit-learn's bundled handwritten digits (offline) and synthetic rows like them.

Every file is written to a temp file beside its target and renamed, so a reader never sees half a CSV.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np

from mlops.errors import MlopsError

log = logging.getLogger(__name__)

N_PIXELS = 64
PIXEL_MAX = 16
COLUMNS = [f"pixel_{i}" for i in range(N_PIXELS)] + ["label"]
CHUNK_ROWS = 100_000


class DataError(MlopsError):
    """A dataset file that cannot be written."""


@contextmanager
def _atomic_writer(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise DataError(f"cannot write {target}: {err.strerror or err}") from err
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.data.astype(np.int8), bunch.target.astype(np.int8)


def _encode_rows(rows: np.ndarray) -> bytes:
    """CSV text for an int matrix whose values are all in 0..19, built with array ops.

    Per-cell formatting (pandas, ``np.savetxt``) takes ~15 s for 1M x 65 cells; placing digit bytes at
    computed offsets takes well under a second.
    """
    values = rows.astype(np.uint8).ravel()
    two_digits = values >= 10
    widths = two_digits.astype(np.int32) + 2  # digits plus the separator
    ends = np.cumsum(widths, dtype=np.int64)
    starts = ends - widths
    buf = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint8)
    buf[starts[two_digits]] = ord("1")
    buf[starts[two_digits] + 1] = ord("0") + values[two_digits] - 10
    buf[starts[~two_digits]] = ord("0") + values[~two_digits]
    seps = np.full(values.shape, ord(","), dtype=np.uint8)
    seps[rows.shape[1] - 1 :: rows.shape[1]] = ord("\n")
    buf[ends - 1] = seps
    return buf.tobytes()


def _header() -> bytes:
    return (",".join(COLUMNS) + "\n").encode()


def write_digits_csv(path: str | os.PathLike) -> int:
    """Write all 1797 digits rows, in scikit-learn's order, with the ``COLUMNS`` header. Returns the row count."""
    pixels, labels = _digits()
    rows = np.column_stack([pixels, labels])
    with _atomic_writer(path) as out:
        out.write(_header())
        out.write(_encode_rows(rows))
    log.info("wrote %d digits rows to %s", len(rows), path)
    return len(rows)


def generate_rows(n: int, path: str | os.PathLike, seed: int = 0) -> int:
    """Write ``n`` synthetic digits-like rows (a real digit with pixel noise of -1..+1, clipped to 0..16).

    Rows are produced and written in chunks, so memory stays flat whatever ``n`` is. Same ``n`` and
    ``seed`` give the same file. Returns the row count.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"row count must be a non-negative integer (got {n!r})")
    pixels, labels = _digits()
    rng = np.random.default_rng(seed)
    written = 0
    with _atomic_writer(path) as out:
        out.write(_header())
        while written < n:
            size = min(CHUNK_ROWS, n - written)
            pick = rng.integers(0, len(pixels), size)
            noise = rng.integers(-1, 2, (size, N_PIXELS), dtype=np.int8)
            chunk = np.clip(pixels[pick] + noise, 0, PIXEL_MAX)
            out.write(_encode_rows(np.column_stack([chunk, labels[pick]])))
            written += size
            log.info("generated %d of %d rows", written, n)
    return written
