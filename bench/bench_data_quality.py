"""Benchmark: our data-quality step vs bare great-expectations on the same rows and the same suite.

    /work/main/.venv/bin/python bench/bench_data_quality.py [--rows 1000000] [--repeats 3]

(a) steps/validate_data/code/validate.py as a subprocess, the rows mounted as one "train" split
    (so both sides run the suite once; per-split runs add GX's fixed per-validation cost), including
    its report JSON and data docs;
(b) bare GX in one fresh process: import, ``pd.read_csv``, ephemeral context, the same 197
    expectations built directly with ``gx.expectations`` classes, one validation.
Both use result_format BASIC and are timed as whole processes (wall clock, start-up included). The
CSV (N rows x 65 columns) is generated once and cached under the temp dir.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from steps.preprocess.data import generate_rows  # noqa: E402

VALIDATE = ROOT / "steps" / "validate_data" / "code" / "validate.py"
SUITE = ROOT / "config" / "expectations" / "digits.yaml"

# The shipped suite for the train split, written as plain GX code.
BARE_GX = textwrap.dedent(
    """
    import sys
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd

    frame = pd.read_csv(sys.argv[1])
    columns = [f"pixel_{i}" for i in range(64)] + ["label"]
    ints = ["int8", "int16", "int32", "int64", "Int8", "Int16", "Int32", "Int64"]
    expectations = [gxe.ExpectTableColumnsToMatchOrderedList(column_list=columns)]
    expectations += [gxe.ExpectColumnValuesToBeInTypeList(column=c, type_list=ints) for c in columns]
    expectations += [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    expectations += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=16) for c in columns[:-1]]
    expectations += [gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(range(10)))]
    expectations += [gxe.ExpectTableRowCountToBeBetween(min_value=500)]

    context = gx.get_context(mode="ephemeral")
    suite = context.suites.add(gx.ExpectationSuite(name="digits", expectations=expectations))
    batch = context.data_sources.add_pandas("bench").add_dataframe_asset("train")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="train", data=batch.add_batch_definition_whole_dataframe("all"), suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format="BASIC")
    assert result.success, result.statistics
    print(result.statistics["evaluated_expectations"])
    """
)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds (user + sys; steadier on a shared machine) and stdout of one run."""
    cpu_before = _children_cpu()
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    cpu = _children_cpu() - cpu_before
    if result.returncode != 0:
        raise SystemExit(
            f"benchmark command failed (exit {result.returncode}): {' '.join(cmd)}\n{result.stderr[-2000:]}"
        )
    return elapsed, cpu, result.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "mlops-bench-data-quality"
    )
    args = parser.parse_args()
    if args.rows < 500:
        parser.error("--rows must be >= 500 (the suite's minimum train row count)")

    data_dir = args.cache_dir / f"rows-{args.rows}"
    csv = data_dir / "train" / "part-algo-1.csv"
    if not csv.is_file():
        print(f"generating {args.rows} rows x 65 columns into {csv} ...", flush=True)
        started = time.perf_counter()
        generate_rows(args.rows, csv, seed=0)
        print(f"  done in {time.perf_counter() - started:.1f}s", flush=True)
    size_mb = csv.stat().st_size / 1e6

    python = sys.executable
    ours_cmd = [python, str(VALIDATE), "--suite", str(SUITE), "--input-dir", str(data_dir)]
    bare_cmd = [python, "-c", BARE_GX, str(csv)]
    times: dict[str, list[float]] = {"ours": [], "bare": []}
    cpus: dict[str, list[float]] = {"ours": [], "bare": []}
    for run in range(1, args.repeats + 1):
        with tempfile.TemporaryDirectory() as report:
            # Alternate the order so neither side always runs on a warmer page cache.
            order = [("ours", [*ours_cmd, "--report-dir", report]), ("bare", bare_cmd)]
            for name, cmd in order if run % 2 else reversed(order):
                elapsed, cpu, out = timed(cmd)
                if name == "bare":
                    assert out.strip().splitlines()[-1] == "197", out  # same suite as ours on train
                else:
                    assert "data quality passed: 197 expectations" in out, out
                    assert (Path(report) / "data_docs" / "index.html").is_file()
                times[name].append(elapsed)
                cpus[name].append(cpu)
                print(f"run {run}/{args.repeats}: {name:4s} {elapsed:7.2f}s wall {cpu:7.2f}s cpu", flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpus.items()}
    print()
    print(
        f"rows={args.rows} columns=65 csv={size_mb:.0f} MB expectations=197 split=train repeats={args.repeats}"
    )
    print(f"| {'what':<54} | {'wall s':>7} | {'cpu s':>7} |")
    print(f"|{'-' * 56}|{'-' * 9}|{'-' * 9}|")
    print(
        f"| {'(a) validate.py subprocess (+ report JSON, data docs)':<54} | {med['ours']:7.2f} | {med_cpu['ours']:7.2f} |"
    )
    print(
        f"| {'(b) bare GX: import + read + ephemeral + validate':<54} | {med['bare']:7.2f} | {med_cpu['bare']:7.2f} |"
    )
    ratio, ratio_cpu = med["ours"] / med["bare"], med_cpu["ours"] / med_cpu["bare"]
    print(f"| {'ratio (a) / (b), medians':<54} | {ratio:7.2f} | {ratio_cpu:7.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
