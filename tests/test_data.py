"""steps/preprocess/data.py: the digits CSV, synthetic rows like it, and atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from steps.preprocess import data
from steps.preprocess.data import COLUMNS, DataError, generate_rows, write_digits_csv


def test_columns_are_64_pixels_then_label():
    assert COLUMNS[:2] == ["pixel_0", "pixel_1"]
    assert COLUMNS[63:] == ["pixel_63", "label"]
    assert len(COLUMNS) == 65


def test_digits_csv_holds_every_row_in_sklearn_order(tmp_path):
    path = tmp_path / "raw" / "digits.csv"
    assert write_digits_csv(path) == 1797
    frame = pd.read_csv(path)
    bunch = load_digits()
    assert list(frame.columns) == COLUMNS
    assert (frame.dtypes == np.int64).all()
    np.testing.assert_array_equal(frame[COLUMNS[:-1]].to_numpy(), bunch.data.astype(int))
    np.testing.assert_array_equal(frame["label"].to_numpy(), bunch.target)


def test_generated_rows_have_the_digits_shape_and_ranges_across_chunks(tmp_path):
    n = data.CHUNK_ROWS + 7  # crosses a chunk boundary
    path = tmp_path / "big.csv"
    assert generate_rows(n, path, seed=3) == n
    frame = pd.read_csv(path)
    assert list(frame.columns) == COLUMNS
    assert len(frame) == n
    assert (frame.dtypes == np.int64).all()
    pixels = frame[COLUMNS[:-1]].to_numpy()
    assert pixels.min() == 0 and pixels.max() == 16
    assert set(frame["label"].unique()) == set(range(10))


def test_generated_rows_are_deterministic_per_seed(tmp_path):
    generate_rows(500, tmp_path / "a.csv", seed=1)
    generate_rows(500, tmp_path / "b.csv", seed=1)
    generate_rows(500, tmp_path / "c.csv", seed=2)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()


def test_zero_rows_writes_just_the_header(tmp_path):
    assert generate_rows(0, tmp_path / "empty.csv") == 0
    assert (tmp_path / "empty.csv").read_text() == ",".join(COLUMNS) + "\n"


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True, None])
def test_bad_row_counts_are_rejected_and_nothing_is_written(tmp_path, bad):
    target = tmp_path / "x.csv"
    with pytest.raises(DataError, match="row count must be a non-negative integer"):
        generate_rows(bad, target)
    assert list(tmp_path.iterdir()) == []


def test_a_crash_mid_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "rows.csv"
    target.write_text("previous\n")
    calls = []
    real = data._encode_rows

    def fail_on_second_chunk(rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(rows)

    monkeypatch.setattr(data, "_encode_rows", fail_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        generate_rows(data.CHUNK_ROWS + 1, target)
    assert target.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.csv"]


def test_unwritable_target_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match=r"cannot write .*file/sub/x\.csv"):
        write_digits_csv(blocker / "sub" / "x.csv")
