"""Deterministic stand-ins for the data sets the examples download: the right shape, a few hundred rows.

Every generator takes a path and writes one file (or a directory tree) with a fixed seed; the same call
always writes the same bytes. Only the standard library and numpy are used, except ``mnist_legacy`` which
writes ``torch.save`` files and therefore needs torch (``.venv`` has it).
"""

from __future__ import annotations

import gzip
import io
import struct
from pathlib import Path

import numpy as np


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, newline="\n")


def abalone_rows(n: int, seed: int) -> list[list]:
    """UCI abalone's 9 columns: sex (M/F/I), 7 measurements, rings (an integer label)."""
    rng = _rng(seed)
    rows = []
    for _ in range(n):
        sex = str(rng.choice(["M", "F", "I"], p=[0.37, 0.31, 0.32]))
        length = float(np.clip(rng.normal(0.52 if sex != "I" else 0.43, 0.11), 0.075, 0.815))
        diameter = float(np.clip(length * rng.normal(0.79, 0.03), 0.055, 0.65))
        height = float(np.clip(diameter * rng.normal(0.34, 0.05), 0.01, 0.25))
        whole = float(np.clip(length**3 * rng.normal(5.8, 0.6), 0.002, 2.8))
        shucked = float(np.clip(whole * rng.normal(0.43, 0.05), 0.001, 1.5))
        viscera = float(np.clip(whole * rng.normal(0.22, 0.03), 0.0005, 0.76))
        shell = float(np.clip(whole * rng.normal(0.29, 0.04), 0.0015, 1.0))
        rings = int(np.clip(round(3 + 16 * length + 20 * shell + rng.normal(0, 1.5)), 1, 29))
        rows.append([sex, round(length, 3), round(diameter, 3), round(height, 3), round(whole, 4),
                     round(shucked, 4), round(viscera, 4), round(shell, 4), rings])  # fmt: skip
    return rows


def abalone(path: Path, n: int = 300, seed: int = 4177) -> None:
    """Headerless CSV, as in s3://sagemaker-sample-files/datasets/tabular/uci_abalone/abalone.csv."""
    _write(path, "".join(",".join(str(v) for v in row) + "\n" for row in abalone_rows(n, seed)))


def abalone_batch(path: Path, n: int = 100, seed: int = 4178) -> None:
    """10 features per line in libsvm form, no label: what the model trained on preprocess.py's output (7
    standardized measurements, then sex one-hot encoded as F, I, M) takes for batch inference. libsvm
    because the notebook's TransformInput names no ContentType, and the XGBoost container reads a request
    without one as libsvm (sagemaker_xgboost_container data_utils.get_content_type); indices 0-9 are the
    CSV-trained model's feature columns."""
    rng = _rng(seed)
    lines = []
    for _ in range(n):
        numeric = [round(float(v), 6) for v in rng.normal(0.0, 1.0, size=7)]
        onehot = [0.0, 0.0, 0.0]
        onehot[int(rng.integers(0, 3))] = 1.0
        lines.append(" ".join(f"{i}:{v}" for i, v in enumerate(numeric + onehot)) + "\n")
    _write(path, "".join(lines))


CAL_HOUSING_COLUMNS = ["longitude", "latitude", "housingMedianAge", "totalRooms", "totalBedrooms",
                       "population", "households", "medianIncome", "medianHouseValue"]  # fmt: skip


def cal_housing(path: Path, n: int = 300, seed: int = 1990) -> None:
    """California housing with a header row, medianHouseValue already divided by 500000 (what the
    notebook writes to data/raw/raw_data_all.csv before uploading it)."""
    rng = _rng(seed)
    lines = [",".join(CAL_HOUSING_COLUMNS) + "\n"]
    for _ in range(n):
        longitude = round(float(rng.uniform(-124.3, -114.3)), 2)
        latitude = round(float(rng.uniform(32.5, 42.0)), 2)
        age = float(rng.integers(1, 53))
        rooms = float(rng.integers(200, 8000))
        bedrooms = float(round(rooms * rng.uniform(0.15, 0.25)))
        population = float(rng.integers(100, 5000))
        households = float(round(population / rng.uniform(2.0, 4.0)))
        income = round(float(rng.gamma(4.0, 1.0)), 4)
        value = round(float(np.clip(income * 0.08 + rng.normal(0.1, 0.05), 0.03, 1.0)), 5)
        row = [longitude, latitude, age, rooms, bedrooms, population, households, income, value]
        lines.append(",".join(str(v) for v in row) + "\n")
    _write(path, "".join(lines))


def _digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n 28x28 uint8 images: a blurred bar whose angle encodes the label, plus noise."""
    rng = _rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    yy, xx = np.mgrid[0:28, 0:28]
    for i, label in enumerate(labels):
        angle = np.pi * label / 10
        distance = np.abs((xx - 14) * np.sin(angle) - (yy - 14) * np.cos(angle))
        image = np.clip(255 * np.exp(-(distance**2) / 4) + rng.normal(0, 20, size=(28, 28)), 0, 255)
        images[i] = image.astype(np.uint8)
    return images, labels


def mnist_legacy(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 60000) -> None:
    """``MNIST/processed/{training,test}.pt``: torchvision's legacy layout, ``torch.save((images, labels))``
    in the pre-1.6 (non-zip) format so old and new torch can read it."""
    import torch

    for name, n, offset in (("training.pt", n_train, 0), ("test.pt", n_test, 1)):
        images, labels = _digits(n, seed + offset)
        target = root / "MNIST" / "processed" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save((torch.from_numpy(images), torch.from_numpy(labels)), buffer,
                   _use_new_zipfile_serialization=False)  # fmt: skip
        target.write_bytes(_canonical_legacy_torch(buffer.getvalue()))


def _canonical_legacy_torch(blob: bytes) -> bytes:
    """The legacy torch.save format names each storage by its memory address and writes the storages in
    address order; rename them "0", "1", ... in the order the object pickle meets them and write them in
    that order, so the same tensors always give the same bytes (torch.load reads it unchanged)."""
    import pickle

    source = io.BytesIO(blob)
    for _ in range(3):  # magic number, protocol version, sys_info
        pickle.load(source)
    start = source.tell()
    met: list[tuple[str, str]] = []  # (key, storage class name) in pickle order

    class Global(str):  # what a GLOBAL opcode names: callable (REDUCE calls it), knows its name
        def __call__(self, *args, **kwargs):
            return None

    class Reader(pickle.Unpickler):
        def find_class(self, module, name):
            return Global(f"{module}.{name}")

        def persistent_load(self, pid):
            if pid[2] not in {key for key, _ in met}:
                met.append((pid[2], str(pid[1])))
            return None

    Reader(source).load()
    end = source.tell()
    file_order = pickle.load(source)
    sizes = {"torch.ByteStorage": 1, "torch.LongStorage": 8}
    classes = dict(met)
    blocks = {}
    for key in file_order:
        numel = int.from_bytes(source.read(8), "little")
        blocks[key] = numel.to_bytes(8, "little") + source.read(numel * sizes[classes[key]])
    names = {key: str(i) for i, (key, _) in enumerate(met)}
    main = blob[start:end]
    for key, name in names.items():
        old = b"X" + len(key).to_bytes(4, "little") + key.encode()
        assert main.count(old) == 1, "a storage key must appear once in the object pickle"
        main = main.replace(old, b"X" + len(name).to_bytes(4, "little") + name.encode())
    out = blob[:start] + main + pickle.dumps([names[key] for key, _ in met], protocol=2)
    return out + b"".join(blocks[key] for key, _ in met)


def _idx(array: np.ndarray) -> bytes:
    dtype_code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, dtype_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_raw(root: Path, n_train: int = 200, n_test: int = 100, seed: int = 70000) -> None:
    """``MNIST/raw/*-ubyte`` (IDX files, uncompressed), the layout torchvision's MNIST(download=True) leaves."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, offset in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = _digits(n, seed + offset)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(labels))


TAXI_COLUMNS = ["VendorID", "tpep_pickup_datetime", "tpep_dropoff_datetime", "passenger_count",
                "trip_distance", "RatecodeID", "store_and_fwd_flag", "PULocationID", "DOLocationID",
                "payment_type", "fare_amount", "extra", "mta_tax", "tip_amount", "tolls_amount",
                "improvement_surcharge", "total_amount", "congestion_surcharge"]  # fmt: skip


def taxi_month(path: Path, month: int, n: int = 40, seed: int = 2020) -> None:
    """A few rows of NYC TLC yellow_tripdata_2020-MM.csv (header row, the 18 columns of 2020)."""
    rng = _rng(seed + month)
    lines = [",".join(TAXI_COLUMNS) + "\n"]
    for _ in range(n):
        day, hour, minute = int(rng.integers(1, 29)), int(rng.integers(0, 24)), int(rng.integers(0, 60))
        duration = int(rng.integers(3, 45))
        end_hour, end_minute = (hour + (minute + duration) // 60) % 24, (minute + duration) % 60
        pickup = f"2020-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:00"
        dropoff = f"2020-{month:02d}-{day:02d} {end_hour:02d}:{end_minute:02d}:00"
        distance = round(float(rng.gamma(2.0, 1.5)), 2)
        fare = round(2.5 + distance * 2.5, 2)
        tip = round(float(fare * rng.uniform(0, 0.25)), 2)
        total = round(fare + 0.5 + 0.5 + tip + 0.3 + 2.5, 2)
        row = [int(rng.integers(1, 3)), pickup, dropoff, int(rng.integers(1, 5)), distance, 1, "N",
               int(rng.integers(1, 266)), int(rng.integers(1, 266)), int(rng.integers(1, 3)), fare, 0.5,
               0.5, tip, 0, 0.3, total, 2.5]  # fmt: skip
        lines.append(",".join(str(v) for v in row) + "\n")
    _write(path, "".join(lines))


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a zero timestamp, so the same input always gives the same bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        handle.write(data)
    return buffer.getvalue()


GENERATORS = {
    "abalone": abalone,
    "abalone_batch": abalone_batch,
    "cal_housing": cal_housing,
    "mnist_legacy": mnist_legacy,
    "mnist_raw": mnist_raw,
    **{f"taxi_2020_{m:02d}": (lambda path, m=m: taxi_month(path, m)) for m in range(1, 13)},
}
