"""Preprocess (SageMaker Processing job): clean the raw digits CSVs and split them into train/validation/test.

Container contract: reads every ``*.csv`` under /opt/ml/processing/input/raw (with ShardedByS3Key each
instance sees only its shard of files) and writes
/opt/ml/processing/output/{train,validation,test}/part-<current_host>.csv.

Cleaning strips header whitespace, drops fully-empty rows and exact duplicates (within this instance's
shard) and casts cells to numbers. It deliberately does not repair out-of-range values, unknown labels or
nulls: the data-quality gate after this step must see and reject them.

The split of a row depends only on its values and ``--seed`` (a stable hash mapped to [0, 1)), so the same
row lands in the same split however the files are sharded across instances.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

INPUT_DIR = Path("/opt/ml/processing/input/raw")
OUTPUT_DIR = Path("/opt/ml/processing/output")
RESOURCE_CONFIG = Path("/opt/ml/config/resourceconfig.json")
SPLITS = ("train", "validation", "test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-ratio", type=float, default=0.7)
    parser.add_argument("--validation-ratio", type=float, default=0.15)
    parser.add_argument("--test-ratio", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    ratios = (args.train_ratio, args.validation_ratio, args.test_ratio)
    if any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        parser.error(f"split ratios must be >= 0 and sum to 1 (got {ratios[0]} + {ratios[1]} + {ratios[2]})")
    return args


def current_host() -> str:
    if RESOURCE_CONFIG.is_file():
        return json.loads(RESOURCE_CONFIG.read_text())["current_host"]
    return "algo-1"


def read_shard(input_dir: Path) -> tuple[pd.DataFrame, list[Path]]:
    files = sorted(input_dir.rglob("*.csv"))
    frames = []
    for path in files:
        # Read as text so casting is ours to count; blank lines are skipped by the reader.
        frame = pd.read_csv(path, dtype=str, keep_default_na=True, skipinitialspace=True)
        frame.columns = [str(c).strip() for c in frame.columns]
        frames.append(frame)
        print(f"read {len(frame)} rows from {path.relative_to(input_dir)}", flush=True)
    if not frames:
        return pd.DataFrame(), files
    return pd.concat(frames, ignore_index=True, sort=False), files


def to_numbers(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Cast every column to numbers; whole-number columns become (nullable) integers.

    Text that is not a number becomes null (counted and reported) for the gate to reject.
    """
    out = {}
    not_numbers = 0
    for name in frame.columns:
        raw = frame[name]
        stripped = raw.str.strip()
        numbers = pd.to_numeric(stripped, errors="coerce")
        not_numbers += int((numbers.isna() & stripped.notna() & (stripped != "")).sum())
        finite = numbers.dropna()
        if len(finite) and (finite == np.floor(finite)).all() and finite.abs().max() < 2**62:
            numbers = numbers.astype("Int64")
        elif not len(finite):
            numbers = numbers.astype("Int64")
        out[name] = numbers
    return pd.DataFrame(out, index=frame.index), not_numbers


def split_fractions(frame: pd.DataFrame, seed: int) -> np.ndarray:
    """A value in [0, 1) per row from a stable hash of the row's values and the seed.

    Values are hashed as float64 so a row hashes the same whether its shard read a column as integers or,
    because of a null elsewhere in the shard, as floats.
    """
    if frame.empty:
        return np.empty(0)
    as_float = frame.astype("float64")
    hashed = pd.util.hash_pandas_object(as_float, index=False).to_numpy(dtype=np.uint64)
    # splitmix64 finaliser over (hash + seed): decorrelates the seed from the row hash.
    with np.errstate(over="ignore"):
        x = hashed + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host = current_host()
    raw, files = read_shard(INPUT_DIR)
    print(f"{host}: read {len(raw)} rows from {len(files)} file(s) under {INPUT_DIR}", flush=True)
    if not files:
        # ShardedByS3Key with more instances than files leaves some instances nothing to do.
        print(f"{host}: no CSV files in this shard; writing no parts", flush=True)
        return 0

    before = len(raw)
    raw = raw.dropna(how="all")  # blank cells read as nulls, so ",,,," rows are all-null
    empty = before - len(raw)
    before = len(raw)
    clean, not_numbers = to_numbers(raw)
    clean = clean.drop_duplicates(ignore_index=True)
    duplicates = before - len(clean)
    print(
        f"{host}: kept {len(clean)} rows; dropped {empty} empty and {duplicates} duplicate rows; "
        f"{not_numbers} non-numeric cells left as nulls for the data-quality gate",
        flush=True,
    )

    fractions = split_fractions(clean, args.seed)
    bounds = np.array([args.train_ratio, args.train_ratio + args.validation_ratio])
    which = np.searchsorted(bounds, fractions, side="right")
    for index, split in enumerate(SPLITS):
        part = clean[which == index]
        write_atomic(part, OUTPUT_DIR / split / f"part-{host}.csv")
        print(f"{host}: {split}: {len(part)} rows", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
