"""Summary of a batch-score run: rows in, predictions out, per file and per label; fails when they differ.

The transform writes one ``<file>.out`` per input file; each of its lines is the model server's answer to
one request (``{"predictions": [...]}``, or ``{"SageMakerInput": ..., "SageMakerOutput": {...}}`` when
the input is joined). Every input row must have exactly one prediction. Writes ``summary.json`` (the step's
property file) and fails with one line naming the first file whose counts differ.

    python3 summarize.py --model-package-arn ARN
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

DATA_DIR = Path("/opt/ml/processing/input/data")
PREDICTIONS_DIR = Path("/opt/ml/processing/input/predictions")
OUTPUT_DIR = Path("/opt/ml/processing/output/summary")
OUTPUT_FILE = "summary.json"
FAILURE_FILE = Path("/opt/ml/output/message")
JOINED = "SageMakerOutput"


def _files(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def count_rows(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.strip())


def predictions(path: Path) -> list[dict]:
    """Every prediction in a ``.out`` file, in order; raises ValueError naming the line that is not one."""
    found = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                answer = json.loads(line)
                answer = answer[JOINED] if JOINED in answer else answer
                found.extend(answer["predictions"])
            except (ValueError, TypeError, KeyError) as err:
                raise ValueError(f"{path.name} line {number} is not a model answer ({err})") from None
    return found


def summarize(data_dir: Path, predictions_dir: Path, model_package_arn: str) -> dict:
    outputs = [name for name in _files(predictions_dir) if name.endswith(".out")]
    per_file, labels, problems = {}, Counter(), []
    for name in _files(data_dir):
        rows = count_rows(data_dir / name)
        # <S3OutputPath>/<key below the input prefix>.out; match on the key's tail either way
        match = next((o for o in outputs if o == f"{name}.out" or o.endswith(f"/{name}.out")), None)
        if match is None:
            problems.append(f"{name}: no {name}.out among the predictions")
            per_file[name] = {"rows": rows, "predictions": 0}
            continue
        try:
            found = predictions(predictions_dir / match)
        except ValueError as err:
            problems.append(str(err))
            found = []
        else:
            if len(found) != rows:
                problems.append(f"{name}: {rows} rows but {len(found)} predictions")
        labels.update(str(p.get("label")) for p in found if isinstance(p, dict))
        per_file[name] = {"rows": rows, "predictions": len(found)}
    if not per_file:
        problems.append("no input files to summarise")
    return {
        "model_package_arn": model_package_arn,
        "files": len(per_file),
        "rows": sum(f["rows"] for f in per_file.values()),
        "predictions": sum(f["predictions"] for f in per_file.values()),
        "labels": dict(sorted(labels.items())),
        "per_file": per_file,
        "passed": not problems,
        "reason": problems[0] if problems else "",
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-package-arn", default="")
    args = parser.parse_args(argv)
    summary = summarize(DATA_DIR, PREDICTIONS_DIR, args.model_package_arn)
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUTPUT_DIR / OUTPUT_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "per_file"}), flush=True)
    if not summary["passed"]:
        FAILURE_FILE.parent.mkdir(parents=True, exist_ok=True)
        FAILURE_FILE.write_text(f"batch score summary: {summary['reason']}")
        print(summary["reason"], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
