"""Asynchronous inference, end to end: InvokeEndpointAsync to the answer in the store, against InvokeEndpoint.

    .venv/bin/python bench/bench_async.py [--requests 50] [--mb 0,1,50]

One local endpoint (the sum model of the serving tests, 1 worker) behind an in-process sagemaker-runtime API
with its async queue (MaxConcurrentInvocationsPerInstance 2), boto3 as the client. For each payload size in
--mb (0 = a one-row JSON), --requests requests one after another; the latency of each is from the call to
the moment its OutputLocation exists in the store (polled every 5 ms), as a client polling S3 sees it. The
same one-row payload through InvokeEndpoint is the real-time baseline. Printed as a Markdown table: p50/p99.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Sums a JSON payload's rows; for a binary payload, answers its size (what a large async input stands for).
INFERENCE = """
import json
def model_fn(model_dir):
    return None
def input_fn(body, content_type):
    return json.loads(body) if content_type == "application/json" else body
def predict_fn(data, model):
    return [sum(r) for r in data] if isinstance(data, list) else {"bytes": len(data)}
def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def main(argv: list[str] | None = None) -> int:
    import boto3

    from mlops.local.async_inference import AsyncQueue
    from mlops.local.s3store import S3Store
    from mlops.serving import supervisor
    from mlops.serving.runtime_api import RuntimeApiServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument(
        "--mb", default="0,1,50", help="payload sizes in MB, comma-separated (0: one JSON row)"
    )
    args = parser.parse_args(argv)
    sizes = [int(v) for v in args.mb.split(",") if v.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-async-") as tmp:
        home = Path(tmp) / "home"
        model = Path(tmp) / "model"
        (model / "code").mkdir(parents=True)
        (model / "code" / "inference.py").write_text(INFERENCE)
        config = {"OutputConfig": {"S3OutputPath": "s3://bench/out"},
                  "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 2}}  # fmt: skip
        supervisor.start_endpoint(
            "async", model, supervisor.free_port(), home=home, workers=1, async_config=config
        )
        supervisor.start_endpoint("realtime", model, supervisor.free_port(), home=home, workers=1)
        store = S3Store(home / "s3")
        queue = AsyncQueue(home)
        try:
            with RuntimeApiServer(home, backend=queue) as api:
                runtime = boto3.client(
                    "sagemaker-runtime", endpoint_url=api.url, region_name="us-east-1", aws_access_key_id="x",
                    aws_secret_access_key="x",
                )  # fmt: skip
                row = json.dumps([[1.0, 2.0, 3.0]]).encode()
                times = []
                for _ in range(args.requests):
                    start = time.perf_counter()
                    runtime.invoke_endpoint(EndpointName="realtime", Body=row, ContentType="application/json")
                    times.append(time.perf_counter() - start)
                rows.append(("InvokeEndpoint, one JSON row", times))
                for mb in sizes:
                    key = f"s3://bench/in/{mb}mb"
                    if mb:
                        store.put_bytes(key, b"\0" * (mb << 20))
                        content_type = "application/octet-stream"
                    else:
                        store.put_bytes(key, row)
                        content_type = "application/json"
                    times = []
                    for _ in range(args.requests if mb < 10 else max(3, args.requests // 10)):
                        start = time.perf_counter()
                        answer = runtime.invoke_endpoint_async(
                            EndpointName="async", InputLocation=key, ContentType=content_type
                        )
                        while not store.exists(answer["OutputLocation"]):
                            time.sleep(0.005)
                        times.append(time.perf_counter() - start)
                    label = f"InvokeEndpointAsync, {mb} MB" if mb else "InvokeEndpointAsync, one JSON row"
                    rows.append((label, times))
        finally:
            queue.close()
            for name in ("async", "realtime"):
                supervisor.stop_endpoint(name, home=home)
    print("\n| request | n | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for label, times in rows:
        ms = [t * 1000 for t in times]
        print(f"| {label} | {len(ms)} | {statistics.median(ms):.1f} | {percentile(ms, 0.99):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
