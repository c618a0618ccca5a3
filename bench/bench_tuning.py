"""Per-trial overhead of a Tuning step against the same number of plain Training steps.

    .venv/bin/python bench/bench_tuning.py [--trials 20]

Both run through the local executor (`run_definition`, namespaces as configured) with the same tiny training
script (it prints ``loss: (shift-3)^2``) and one job at a time: a Tuning step of ``--trials`` Random trials
(MaxParallelTrainingJobs 1) against a chain of ``--trials`` Training steps with fixed hyperparameters. The
difference per job is what the search adds (optuna's sampling, the trial records, reading the objective).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCRIPT = """
import argparse, os, pathlib
p = argparse.ArgumentParser()
p.add_argument("--shift", type=float, default=0.0)
a, _ = p.parse_known_args()
pathlib.Path(os.environ["SM_MODEL_DIR"], "x.txt").write_text(str(a.shift))
print(f"loss: {(a.shift - 3) ** 2}")
"""
ROLE = "arn:aws:iam::123456789012:role/BenchRole"


def training_definition(output: str, hyperparameters: dict[str, str]) -> dict:
    """A CreateTrainingJob request (a Training step's Arguments / a tuning job's TrainingJobDefinition)."""
    return {
        "AlgorithmSpecification": {
            "TrainingImage": "local/bench:1",
            "TrainingInputMode": "File",
            "ContainerEntrypoint": ["python3", "/opt/ml/input/data/code/train.py"],
            "MetricDefinitions": [{"Name": "loss", "Regex": "loss: ([0-9.eE+-]+)"}],
        },
        "RoleArn": ROLE,
        "InputDataConfig": [
            {
                "ChannelName": "code",
                "InputMode": "File",
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bench/code/"}},
            }
        ],  # fmt: skip
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 120},
        **({"HyperParameters": hyperparameters} if hyperparameters else {}),
    }


def tuning_pipeline(trials: int) -> dict:
    job = training_definition("s3://bench/tuned", {})
    job["StaticHyperParameters"] = job.pop("HyperParameters", {})
    job["AlgorithmSpecification"].pop("MetricDefinitions")
    job["AlgorithmSpecification"]["MetricDefinitions"] = [{"Name": "loss", "Regex": "loss: ([0-9.eE+-]+)"}]
    config = {
        "Strategy": "Random",
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "loss"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": trials, "MaxParallelTrainingJobs": 1},
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {"Name": "shift", "MinValue": "0", "MaxValue": "10", "ScalingType": "Linear"}
            ]
        },  # fmt: skip
        "RandomSeed": 7,
    }
    step = {"Name": "Tune", "Type": "Tuning",
            "Arguments": {"HyperParameterTuningJobConfig": config, "TrainingJobDefinition": job}}  # fmt: skip
    return {"Version": "2020-12-01", "Parameters": [], "Steps": [step]}


def training_pipeline(trials: int) -> dict:
    steps = []
    for i in range(trials):
        step = {"Name": f"Train{i:02d}", "Type": "Training",
                "Arguments": training_definition(f"s3://bench/plain{i}", {"shift": str(i / 2)})}  # fmt: skip
        if i:
            step["DependsOn"] = [f"Train{i - 1:02d}"]
        steps.append(step)
    return {"Version": "2020-12-01", "Parameters": [], "Steps": steps}


def main(argv: list[str] | None = None) -> int:
    from mlops.local.s3store import S3Store
    from mlops.local.scheduler import run_definition

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args(argv)
    rows = []
    for label, build in (
        ("Tuning step, Random", tuning_pipeline),
        ("Training steps, chained", training_pipeline),
    ):
        with tempfile.TemporaryDirectory(prefix="bench-tuning-") as tmp:
            home = Path(tmp) / "home"
            S3Store(home / "s3").put_bytes("s3://bench/code/train.py", SCRIPT.encode())
            started = time.perf_counter()
            record = run_definition(build(args.trials), home=home, use_cache=False)
            seconds = time.perf_counter() - started
            if record.status != "Succeeded":
                print(f"{label}: {record.status}: {record.failure_reason}", file=sys.stderr)
                return 1
            rows.append((label, seconds))
    print(f"\n| {args.trials} jobs, one at a time | total s | per job ms |")
    print("| --- | ---: | ---: |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {seconds / args.trials * 1000:.0f} |")
    (tuned, s_tuned), (plain, s_plain) = rows
    print(f"\nper-trial overhead of tuning: {(s_tuned - s_plain) / args.trials * 1000:+.0f} ms "
          f"({s_tuned / s_plain:.2f}x the plain jobs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
