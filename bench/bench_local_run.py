"""Local executor benchmarks: first full run, cached re-run, per-step overhead, and scaling with rows.

    .venv/bin/python bench/bench_local_run.py [--repeat 3] [--rows 10000,100000,1000000] [--skip-scaling]

Every figure is wall time of the real `mlops run` CLI in a fresh process (what a user waits for),
median of --repeat runs, printed as a Markdown table.
- first full run: a fresh home (digits data seeded, the DAG trained end to end; compile cache warm, as
  after any earlier `mlops compile`/`run` of the same tree; the cold compile is reported on its own row)
- cached re-run: the same home again; every job step is a cache hit
- per-step overhead: a generated chain of 20 processing steps that each run `python3 -c` to read a file
  and pass it on, divided by 20 (all included: sandbox, store, scheduling, records)
- rows: the full DAG on N generated rows (MetricThreshold=0 so every run takes the same path)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


# one compile cache for the whole benchmark, empty at the start: the first run pays the cold compile
CACHE = tempfile.mkdtemp(prefix="bench-compile-cache-")


def mlops_run(home: Path, *args: str) -> float:
    cmd = [sys.executable, "-m", "mlops.cli", "run", "--home", str(home), *args]
    start = time.perf_counter()
    env = {**os.environ, "MLOPS_COMPILE_CACHE": CACHE}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"benchmark run failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds


def chain_definition(n: int, bucket: str = "bench") -> dict:
    steps = []
    for i in range(n):
        source = (
            f"s3://{bucket}/seed/"
            if i == 0
            else {"Get": f"Steps.Step{i - 1:02d}.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"}
        )
        code = (
            "import pathlib; i=pathlib.Path('/opt/ml/processing/input/in'); o=pathlib.Path('/opt/ml/processing/output');"
            " o.joinpath('value.txt').write_text(str(int(next(i.glob('*.txt')).read_text()) + 1))"
        )
        steps.append(
            {
                "Name": f"Step{i:02d}",
                "Type": "Processing",
                "Arguments": {
                    "ProcessingResources": {
                        "ClusterConfig": {
                            "InstanceType": "ml.t3.medium",
                            "InstanceCount": 1,
                            "VolumeSizeInGB": 1,
                        }
                    },
                    "AppSpecification": {"ImageUri": "local", "ContainerEntrypoint": ["python3", "-c", code]},
                    "RoleArn": "arn:aws:iam::123456789012:role/bench",
                    "ProcessingInputs": [
                        {
                            "InputName": "in",
                            "S3Input": {
                                "S3Uri": source,
                                "LocalPath": "/opt/ml/processing/input/in",
                                "S3DataType": "S3Prefix",
                                "S3InputMode": "File",
                            },
                        }
                    ],
                    "ProcessingOutputConfig": {
                        "Outputs": [
                            {
                                "OutputName": "out",
                                "S3Output": {
                                    "S3Uri": f"s3://{bucket}/chain/run/step{i:02d}/",
                                    "LocalPath": "/opt/ml/processing/output",
                                    "S3UploadMode": "EndOfJob",
                                },
                            }
                        ]
                    },
                },
            }
        )
    return {"Version": "2020-12-01", "Parameters": [], "Steps": steps}


def bench_chain(repeat: int, n: int = 20) -> float:
    from mlops.local.s3store import S3Store
    from mlops.local.state.home import Home

    per_step = []
    for _ in range(repeat):
        home = Path(tempfile.mkdtemp(prefix="bench-chain-"))
        S3Store(Home.open(home).s3_root).put_bytes("s3://bench/seed/value.txt", b"0")
        definition = home / "chain.json"
        definition.write_text(json.dumps(chain_definition(n)))
        seconds = mlops_run(home, "--definition", str(definition), "--no-cache", "--max-parallel", "1")
        value = S3Store(home / "s3").path(f"s3://bench/chain/run/step{n - 1:02d}/value.txt").read_text()
        assert value == str(n), value
        per_step.append(seconds / n)
    return statistics.median(per_step)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", default="10000,100000,1000000")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--only", choices=["chain", "scaling"], help="run just one part")
    args = parser.parse_args()
    rows: list[tuple[str, str, str]] = []
    if args.only == "chain":
        print(f"| per step, 20-step python3 -c chain (ms) | {bench_chain(args.repeat) * 1000:.0f} | <= 100 |")
        return 0

    cold_home = Path(tempfile.mkdtemp(prefix="bench-cold-"))
    cold = mlops_run(cold_home)
    rows.append(("first full run, cold compile cache (s)", f"{cold:.1f}", "-"))

    first, cached = [], []
    for _ in range(0 if args.only == "scaling" else args.repeat):
        home = Path(tempfile.mkdtemp(prefix="bench-run-"))
        first.append(mlops_run(home))
        cached.append(mlops_run(home))
        print(f"  full {first[-1]:.1f}s, cached {cached[-1]:.2f}s", file=sys.stderr)
    if first:
        rows.append(("first full run on digits (s)", f"{statistics.median(first):.1f}", "<= 45"))
        rows.append(("fully cached re-run (s)", f"{statistics.median(cached):.2f}", "<= 3"))
        chain = bench_chain(args.repeat)
        print(f"  chain: {chain * 1000:.0f} ms per step", file=sys.stderr)
        rows.append(("per step, 20-step python3 -c chain (ms)", f"{chain * 1000:.0f}", "<= 100"))

    if not args.skip_scaling:
        from mlops.local.s3store import S3Store
        from mlops.local.state.home import Home
        from steps.preprocess.data import generate_rows

        for n in [int(x) for x in args.rows.split(",")]:
            home = Path(tempfile.mkdtemp(prefix=f"bench-rows-{n}-"))
            csv = home / "rows.csv"
            generate_rows(n, csv)
            uri = f"s3://mlops-local/bench/rows-{n}/"
            S3Store(Home.open(home).s3_root).put_file(uri + "rows.csv", csv)
            seconds = mlops_run(home, "--param", f"InputDataUri={uri}", "--param", "MetricThreshold=0")
            rows.append((f"full DAG on {n:,} generated rows (s)", f"{seconds:.1f}", "linear"))
            print(f"  {n} rows: {seconds:.1f}s", file=sys.stderr)

    print("| measure | median | goal |")
    print("| --- | --- | --- |")
    for name, value, goal in rows:
        print(f"| {name} | {value} | {goal} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
