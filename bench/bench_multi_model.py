"""Multi-model endpoint: cold (first call: the model is loaded) and warm latency, and what LRU unloading costs.

    .venv/bin/python bench/bench_multi_model.py [--models 6] [--fit 3] [--warm 200]

One hosted endpoint (``Mode: MultiModel``, one instance) over ``--models`` small models under one S3 prefix,
with a memory budget that holds ``--fit`` of them (sized from the first model's measured memory). Through
boto3's sagemaker-runtime client on the in-process API: every model called once (cold), then ``--warm``
calls spread over the ``--fit`` most recent (warm), then one round over all models in order (each call
evicts the least recently used: cold again). Printed as a Markdown table: p50/p99 and the load time.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INFERENCE = """
import json
from pathlib import Path
def model_fn(model_dir):
    return float((Path(model_dir) / "offset.txt").read_text())
def input_fn(body, content_type):
    return json.loads(body)
def predict_fn(data, offset):
    return [x + offset for x in data]
def output_fn(prediction, accept):
    return json.dumps(prediction), "application/json"
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def model_tar(offset: float) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in (("code/inference.py", INFERENCE), ("offset.txt", str(offset))):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    import boto3

    from mlops.local.hosting.endpoints import IN_SERVICE, LocalHosting
    from mlops.local.s3store import S3Store
    from mlops.serving.runtime_api import RuntimeApiServer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=6)
    parser.add_argument("--fit", type=int, default=3, help="how many models the memory budget holds")
    parser.add_argument("--warm", type=int, default=200)
    args = parser.parse_args(argv)
    rows: list[tuple[str, list[float]]] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-mme-") as tmp:
        home = Path(tmp)
        store = S3Store(home / "s3")
        for i in range(args.models):
            store.put_bytes(f"s3://bench/mme/m{i}.tar.gz", model_tar(i))
        model = {"ModelName": "many", "PrimaryContainer": {"Image": "local/serving:1",
                 "ModelDataUrl": "s3://bench/mme/", "Mode": "MultiModel"}}  # fmt: skip
        config = {"ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": "many",
                                          "InitialInstanceCount": 1}]}  # fmt: skip
        probe = LocalHosting(home / "probe", store, restore=False)
        try:
            with RuntimeApiServer(home, hosting=probe) as api:
                probe.create_endpoint("probe", config, {"many": model})
                probe.wait("probe")
                client = boto3.client("sagemaker-runtime", endpoint_url=api.url, region_name="us-east-1",
                                      aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip
                client.invoke_endpoint(EndpointName="probe", Body="[1]", ContentType="application/json",
                                       TargetModel="m0.tar.gz")  # fmt: skip
                one = next(
                    iter(probe._endpoints["probe"].variants["AllTraffic"].instances[0].models.values())
                )
                per_model = one.memory
        finally:
            probe.close(delete=True)
        budget_mb = int((args.fit + 0.5) * per_model / 2**20)
        hosting = LocalHosting(home, store, mme_memory_mb=budget_mb)
        try:
            with RuntimeApiServer(home, hosting=hosting) as api:
                hosting.create_endpoint("many", config, {"many": model})
                if hosting.wait("many") != IN_SERVICE:
                    print(hosting.describe_endpoint("many"), file=sys.stderr)
                    return 1
                client = boto3.client("sagemaker-runtime", endpoint_url=api.url, region_name="us-east-1",
                                      aws_access_key_id="x", aws_secret_access_key="x")  # fmt: skip

                def call(target: str) -> tuple[float, str]:
                    start = time.perf_counter()
                    res = client.invoke_endpoint(EndpointName="many", Body="[1]", ContentType="application/json",
                                                 TargetModel=target)  # fmt: skip
                    res["Body"].read()
                    cache = res["ResponseMetadata"]["HTTPHeaders"].get("x-mlops-model-cache", "")
                    return time.perf_counter() - start, cache

                def timed(targets: list[str]) -> list[float]:
                    out = []
                    for target in targets:
                        seconds, cache = call(target)
                        out.append(seconds)
                        if cache.startswith("miss; loaded in"):
                            loads.append(float(cache.split()[3]))
                    return out

                names = [f"m{i}.tar.gz" for i in range(args.models)]
                rows.append(("cold: first call of each model", timed(names)))
                recent = names[-args.fit :]
                rows.append((f"warm: {args.warm} calls over the {args.fit} loaded", timed(
                    [recent[i % len(recent)] for i in range(args.warm)])))  # fmt: skip
                rows.append(("cold again: a round over all (each call evicts one)", timed(names)))
        finally:
            hosting.close(delete=True)
    print(
        f"\none model server: {per_model / 2**20:.0f} MB resident; budget {budget_mb} MB ({args.fit} models)"
    )
    print("\n| calls | n | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: |")
    for label, times in rows:
        ms = [t * 1000 for t in times]
        print(f"| {label} | {len(ms)} | {statistics.median(ms):.1f} | {percentile(ms, 0.99):.1f} |")
    if loads:
        print(
            f"\nmodel load (unpack, start its server, /ping): p50 {statistics.median(loads):.0f} ms over {len(loads)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
