"""Compile wall time vs the bare SDK: import + the same pipeline build, each in a fresh process.

    .venv/bin/python bench/bench_compile.py [--repeat 5]

Baseline = what the SageMaker SDK itself costs for this pipeline: ``import sagemaker`` modules + building
the same Pipeline object + ``definition()``, with no config loading, no bundle hashing and no file output.
Ours = ``mlops compile --env local --out DIR`` end to end (CLI, config, offline session, bundles, tarballs).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# The SDK's own cost: the same builders under a plain PipelineSession-like offline session, no writes.
BARE_SDK = """
import os, sys
sys.path.insert(0, {root!r})
from tests.project import load_config
cfg = load_config("local")
from mlops.compile.session import prepare_sdk_environment, offline_session
prepare_sdk_environment(cfg.aws.region)
from mlops.compile.bundles import BundleRegistry
from pipelines.model_build import build_pipeline, parameters
from steps.context import StepContext
bundles = BundleRegistry(cfg.aws.s3_root)
from pathlib import Path
root = Path({root!r})
ctx = StepContext(cfg=cfg, session=offline_session(cfg.aws.region, cfg.aws.bucket, bundles, root=root), bundles=bundles, parameters=parameters(cfg), root=root)
build_pipeline(ctx).definition()
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-compile-"))
    bare, ours = [], []
    for i in range(args.repeat):
        bare.append(timed([sys.executable, "-c", BARE_SDK.format(root=str(ROOT))]))
        ours.append(
            timed([sys.executable, "-m", "mlops.cli", "compile", "--env", "local", "--out", str(out)])
        )
        print(
            f"  run {i + 1}/{args.repeat}: sdk {bare[-1]:.2f}s  mlops compile {ours[-1]:.2f}s",
            file=sys.stderr,
        )
    b, o = statistics.median(bare), statistics.median(ours)
    print("| measure | median s |")
    print("| --- | --- |")
    print(f"| bare SDK: import + build + definition() | {b:.2f} |")
    print(f"| mlops compile --env local (CLI, all outputs) | {o:.2f} |")
    print(f"| ratio (goal <= 1.3) | {o / b:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
