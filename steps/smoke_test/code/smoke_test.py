"""Smoke test of a deployed endpoint: status, response schema, accuracy floor and p95 latency.

On SageMaker it runs as a processing job calling the endpoint through boto3's sagemaker-runtime; the local
deploy calls ``run_smoke_test`` with an HTTP invoker against the local endpoint. Same checks, same report.

    python3 smoke_test.py --endpoint NAME --samples 100 --min-accuracy 0.85 --max-p95-ms 200
        [--async-input-uri s3://bucket/prefix]   (an asynchronous endpoint: InvokeEndpointAsync)
        [--target-model v3.tar.gz]                (a multi-model endpoint: the TargetModel invoked)
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import time
from collections.abc import Callable

SAMPLES_DIR = "/opt/ml/processing/input/samples"
REPORT_DIR = "/opt/ml/processing/output/report"
FAILURE_FILE = "/opt/ml/output/message"


class SmokeTestFailed(Exception):
    pass


def load_samples(directory: str, limit: int) -> tuple[list[list[float]], list[int]]:
    rows, labels = [], []
    for path in sorted(glob.glob(os.path.join(directory, "**", "*.csv"), recursive=True)):
        with open(path, newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                continue
            label_at = header.index("label") if "label" in header else len(header) - 1
            for record in reader:
                if not record:
                    continue
                labels.append(int(float(record[label_at])))
                rows.append([float(v) for i, v in enumerate(record) if i != label_at])
                if len(rows) >= limit:
                    return rows, labels
    if not rows:
        raise SmokeTestFailed(f"no sample rows found under {directory}")
    return rows, labels


def run_smoke_test(
    invoke: Callable[[bytes, str], tuple[int, bytes]], rows, labels, min_accuracy: float, max_p95_ms: float
) -> dict:
    """``invoke(body, content_type) -> (status, response body)``; raises SmokeTestFailed with one line."""
    latencies, correct, problems = [], 0, []
    for row, label in zip(rows, labels, strict=True):
        body = json.dumps({"instances": [row]}).encode()
        started = time.perf_counter()
        status, payload = invoke(body, "application/json")
        latencies.append((time.perf_counter() - started) * 1000.0)
        if status != 200:
            problems.append(f"status {status}: {payload[:200]!r}")
            continue
        try:
            predictions = json.loads(payload)["predictions"]
            predicted = int(predictions[0]["label"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            problems.append(
                f"response does not match the schema {{'predictions': [{{'label': int}}]}}: {exc}"
            )
            continue
        correct += predicted == label
    latencies.sort()
    p95 = latencies[max(0, int(round(0.95 * len(latencies))) - 1)]
    accuracy = correct / len(rows)
    report = {"samples": len(rows), "accuracy": accuracy, "p95_latency_ms": round(p95, 3), "errors": len(problems),
              "min_accuracy": min_accuracy, "max_p95_latency_ms": max_p95_ms}  # fmt: skip
    reasons = []
    if problems:
        reasons.append(f"{len(problems)} failed request(s), first: {problems[0]}")
    if accuracy < min_accuracy:
        reasons.append(f"accuracy {accuracy:.3f} below the floor {min_accuracy}")
    if p95 > max_p95_ms:
        reasons.append(f"p95 latency {p95:.1f} ms above {max_p95_ms} ms")
    report["passed"] = not reasons
    if reasons:
        report["reason"] = "smoke test failed: " + "; ".join(reasons)
    return report


def _boto_invoker(endpoint: str, target_model: str | None = None):
    import boto3
    from botocore.exceptions import ClientError

    runtime = boto3.client("sagemaker-runtime")
    target = {"TargetModel": target_model} if target_model else {}

    def invoke(body: bytes, content_type: str) -> tuple[int, bytes]:
        try:
            response = runtime.invoke_endpoint(
                EndpointName=endpoint,
                Body=body,
                ContentType=content_type,
                Accept="application/json",
                **target,
            )
        except ClientError as exc:
            return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500), str(exc).encode()
        return 200, response["Body"].read()

    return invoke


def _async_invoker(endpoint: str, input_uri: str, timeout_s: float = 120.0, poll_s: float = 0.02):
    """An asynchronous endpoint takes no InvokeEndpoint: each payload goes to S3 under ``input_uri``,
    InvokeEndpointAsync queues it, and the answer is read from its OutputLocation once it appears (its
    FailureLocation, if that appears first). The latency measured is the whole round trip."""
    import uuid

    import boto3
    from botocore.exceptions import ClientError

    runtime, s3 = boto3.client("sagemaker-runtime"), boto3.client("s3")
    bucket, _, prefix = input_uri[len("s3://") :].partition("/")

    def split(uri: str) -> tuple[str, str]:
        b, _, k = uri[len("s3://") :].partition("/")
        return b, k

    def read(uri: str | None) -> bytes | None:
        if not uri:
            return None
        try:
            b, k = split(uri)
            return s3.get_object(Bucket=b, Key=k)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def invoke(body: bytes, content_type: str) -> tuple[int, bytes]:
        key = f"{prefix.rstrip('/')}/{uuid.uuid4()}.json".lstrip("/")
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
            response = runtime.invoke_endpoint_async(
                EndpointName=endpoint, InputLocation=f"s3://{bucket}/{key}", ContentType=content_type,
                Accept="application/json",
            )  # fmt: skip
        except ClientError as exc:
            return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500), str(exc).encode()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            answer = read(response.get("OutputLocation"))
            if answer is not None:
                return 200, answer
            failure = read(response.get("FailureLocation"))
            if failure is not None:
                return 500, failure
            time.sleep(poll_s)
        return 504, f"no answer at {response.get('OutputLocation')} within {timeout_s:.0f} s".encode()

    return invoke


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--min-accuracy", type=float, required=True)
    parser.add_argument("--max-p95-ms", type=float, required=True)
    parser.add_argument(
        "--async-input-uri", help="the endpoint is asynchronous: put payloads under this S3 prefix"
    )
    parser.add_argument("--target-model", help="the endpoint is multi-model: invoke this TargetModel")
    args = parser.parse_args(argv)
    if args.async_input_uri:
        invoker = _async_invoker(args.endpoint, args.async_input_uri)
    else:
        invoker = _boto_invoker(args.endpoint, args.target_model)
    try:
        rows, labels = load_samples(SAMPLES_DIR, args.samples)
        report = run_smoke_test(invoker, rows, labels, args.min_accuracy, args.max_p95_ms)
    except SmokeTestFailed as exc:
        report = {"passed": False, "reason": f"smoke test failed: {exc}"}
    os.makedirs(REPORT_DIR, exist_ok=True)
    with open(os.path.join(REPORT_DIR, "smoke_test.json"), "w") as handle:
        json.dump(report, handle, indent=2)
    print(json.dumps(report), flush=True)
    if not report["passed"]:
        os.makedirs(os.path.dirname(FAILURE_FILE), exist_ok=True)
        with open(FAILURE_FILE, "w") as handle:
            handle.write(report["reason"])
        print(report["reason"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
