"""Batch transform throughput: a Transform job of the local runtime against the same model's predict in a loop.

    .venv/bin/python bench/bench_transform.py [--rows 200000] [--repeat 3] [--concurrent 2]

One built-in XGBoost model (the project's xgboost stands in for the image's on both sides), --rows CSV rows of
10 features in one object, and, median of --repeat:
- transform job: ``run_transform_job`` as ``mlops run`` runs a Transform step: a sandboxed serving container
  (the algorithm's serve mode) behind its Unix socket, SplitType Line, MultiRecord batches of MaxPayloadInMB
  6, --concurrent requests at once, the ``.out`` assembled and uploaded; start-up included;
- predict loop: in this process, the same batches parsed the way the container parses CSV and predicted with
  ``Booster.predict``, the predictions written as lines (the work without the service, sandbox or HTTP).
Printed as a Markdown table: rows/s and the ratio to the loop.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def make_model(directory: Path) -> Path:
    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(7)
    x = rng.normal(size=(2000, 10))
    y = x @ rng.normal(size=10) + rng.normal(scale=0.1, size=2000)
    bst = xgb.train({"max_depth": 6, "eta": 0.3}, xgb.DMatrix(x, label=y), num_boost_round=50)
    path = directory / "xgboost-model"
    bst.save_model(str(path))
    return path


def make_data(path: Path, rows: int) -> None:
    import numpy as np

    rng = np.random.default_rng(11)
    np.savetxt(path, rng.normal(size=(rows, 10)), delimiter=",", fmt="%.6f")


def predict_loop(model_path: Path, data: Path, out: Path) -> float:
    import numpy as np
    import xgboost as xgb

    from mlops.local.transform.records import MIB, iter_batches

    start = time.perf_counter()
    bst = xgb.Booster()
    bst.load_model(str(model_path))
    with open(out, "w") as f:
        for batch in iter_batches(data.read_bytes(), "Line", "MultiRecord", 6 * MIB):
            text = batch.payload.decode()
            rows = np.array([line.split(",") for line in text.split("\n")]).astype(float)
            f.writelines(f"{p}\n" for p in bst.predict(xgb.DMatrix(rows)).tolist())
    return time.perf_counter() - start


def transform_job(work: Path, store, concurrent: int, index: int) -> float:
    from mlops.local.runtime.transform import run_transform_job

    request = {
        "ModelName": "bench",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bench/in"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": f"s3://bench/out-{index}", "AssembleWith": "Line"},
        "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 6,
        "MaxConcurrentTransforms": concurrent,
    }
    model = {"PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://bench/model/model.tar.gz"}}
    start = time.perf_counter()
    result = run_transform_job(
        request, job_name=f"bench-{index}", store=store, job_dir=work / f"job-{index}", model=model,
        images={"sagemaker-xgboost:*": "project"},
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    if result.status != "Completed":
        raise SystemExit(f"transform failed: {result.failure_reason}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    import tarfile

    from mlops.local.s3store import S3Store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-transform-") as tmp:
        work = Path(tmp)
        model_path = make_model(work)
        data = work / "data.csv"
        make_data(data, args.rows)
        store = S3Store(work / "s3")
        with tarfile.open(work / "model.tar.gz", "w:gz") as tar:
            tar.add(model_path, arcname="xgboost-model")
        store.put_bytes("s3://bench/model/model.tar.gz", (work / "model.tar.gz").read_bytes())
        store.put_bytes("s3://bench/in/data.csv", data.read_bytes())
        loop = statistics.median(
            predict_loop(model_path, data, work / "loop.out") for _ in range(args.repeat)
        )
        job = statistics.median(transform_job(work, store, args.concurrent, i) for i in range(args.repeat))
        ours = store.path("s3://bench/out-0/data.csv.out").read_text().splitlines()
        theirs = (work / "loop.out").read_text().splitlines()
        assert len(ours) == len(theirs) == args.rows, (len(ours), len(theirs))
        mismatches = sum(abs(float(a) - float(b)) > 1e-5 for a, b in zip(ours, theirs, strict=True))
        assert mismatches == 0, f"{mismatches} predictions differ"
    print(f"\n{args.rows:,} rows x 10 features, one object; median of {args.repeat}\n")
    print("| path | seconds | rows/s | vs predict loop |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in (
        ("predict loop (one process)", loop),
        (f"transform job ({args.concurrent} at once)", job),
    ):
        print(f"| {name} | {seconds:.2f} | {args.rows / seconds:,.0f} | {loop / seconds:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
