#!/usr/bin/env python
"""Run every corpus entry through the local executor and print what happened.

    .venv/bin/python scripts/corpus/try_all.py [NAME...] [--timeout 300] [--keep] [--check]

For each entry: a fresh temporary home, tests/corpus/<name>/s3/ copied to <home>/s3/ (the local store maps
s3://bucket/key to <home>/s3/bucket/key), then

    .venv/bin/mlops run --definition tests/corpus/<name>/definition.json --home <home>

(``--check`` adds ``--check``: list blockers, run nothing) with a timeout. The table shows the entry,
the exit code, the outcome tests/corpus/expected.json expects, and the last line of output (for a
failure, its reason; a closing "resume with: mlops run --resume ID" hint is skipped). Exit status: 0 always; this is a survey, not a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "corpus"
MLOPS = ROOT / ".venv" / "bin" / "mlops"
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def entries() -> list[str]:
    return sorted(p.parent.name for p in CORPUS.glob("*/definition.json"))


def last_line(text: str) -> str:
    """The last line of output, leaving out the closing "resume with: ..." hint (the line before it is the
    failure reason)."""
    lines = [ANSI.sub("", line).strip() for line in text.replace("\r", "\n").splitlines()]
    lines = [line for line in lines if line and not line.startswith("resume with:")]
    return lines[-1] if lines else ""


def run_one(name: str, timeout: float, keep: bool, check: bool) -> tuple[str, str, float, str]:
    home = Path(tempfile.mkdtemp(prefix=f"corpus-{name}-"))
    try:
        if (CORPUS / name / "s3").is_dir():
            shutil.copytree(CORPUS / name / "s3", home / "s3")
        command = [
            str(MLOPS),
            "run",
            "--definition",
            str(CORPUS / name / "definition.json"),
            "--home",
            str(home),
        ]
        if check:
            command.append("--check")
        started = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            code, output = str(proc.returncode), proc.stdout + "\n" + proc.stderr
        except subprocess.TimeoutExpired as exc:
            out = (
                (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
            )
            err = (
                (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr
            )
            code, output = "timeout", f"{out or ''}\n{err or ''}\n(timed out after {timeout:.0f} s)"
        elapsed = time.monotonic() - started
        (home / "try_all.log").write_text(output)
        return code, last_line(output), elapsed, str(home)
    finally:
        if not keep:
            shutil.rmtree(home, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--keep", action="store_true", help="keep each temporary home (its path is printed)")
    parser.add_argument("--check", action="store_true", help="mlops run --check: list blockers, run nothing")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    expected = json.loads((CORPUS / "expected.json").read_text())
    results = []
    for name in args.names or entries():
        code, line, elapsed, home = run_one(name, args.timeout, args.keep, args.check)
        want = expected.get(name)
        if isinstance(want, dict):
            want_text = " ".join(f"{k} {v}" for k, v in want.items() if k in ("refused", "fails"))
        else:
            want_text = want or "?"
        results.append({"entry": name, "exit": code, "expected": want_text, "seconds": round(elapsed, 1),
                        "last_line": line, **({"home": home} if args.keep else {})})  # fmt: skip
        print(f"... {name}: exit {code} in {elapsed:.0f} s", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("| entry | exit | expected | s | last line of output |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        line = r["last_line"].replace("|", "\\|")
        print(f"| {r['entry']} | {r['exit']} | {r['expected']} | {r['seconds']:.0f} | {line} |")
        if args.keep:
            print(f"|  |  |  |  | home: {r['home']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
