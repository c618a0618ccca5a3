"""The environment standing in for an image: the first build and a cached lookup (scikit-learn 1.2-1 image).

    .venv/bin/python bench/bench_image_env.py [--repeat 3] [--cold]

Rows, for ``sagemaker-scikit-learn:1.2-1-cpu-py3`` (Python 3.9, scikit-learn 1.2.1, pandas 1.1.3, ... :
36 packages, sagemaker-training built from its sdist):
- first build: ``prepare()`` into an empty env cache, in a fresh process, uv's wheel cache warm (as after
  any earlier build on the machine); its phases from the progress lines. ``--cold`` adds a build with an
  empty uv cache too (downloads about 150 MB from PyPI).
- bare uv: ``uv venv`` + ``uv pip install`` of the same requirements (no lock file, no bytecode, no import
  check), warm uv cache: what the build costs beyond uv itself.
- cached lookup: ``prepare()`` again, in-process (median of 200) and in a fresh process including the
  import of the module (median of --repeat).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

BUILD = """
import json, sys, time
from mlops.local.images import environments as envs
t0 = time.perf_counter()
marks = []
env = envs.prepare({image!r}, on_progress=lambda line: marks.append((time.perf_counter() - t0, line)))
print(json.dumps({{"total": time.perf_counter() - t0, "built": env.built, "marks": marks,
                  "packages": len(env.packages)}}))
"""

LOOKUP = """
import time
t0 = time.perf_counter()
from mlops.local.images import environments as envs
env = envs.prepare({image!r})
assert not env.built
print(time.perf_counter() - t0)
"""


def run_python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"benchmark step failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout.strip().splitlines()[-1]


def phases(marks: list[tuple[float, str]]) -> dict[str, float]:
    """Seconds per phase, from the progress lines' times."""
    starts = {
        "resolve": "resolving",
        "venv": "creating",
        "install": "installing",
        "bytecode": "compiling bytecode",
        "import check": "checking imports",
        "end": "done in",
    }
    at = {name: next((t for t, line in marks if line.startswith(p)), None) for name, p in starts.items()}
    names = list(starts)
    out = {}
    for a, b in zip(names, names[1:], strict=False):
        if at[a] is not None and at[b] is not None:
            out[a] = at[b] - at[a]
    return out


def first_build(uv_cache: str | None) -> dict:
    cache = tempfile.mkdtemp(prefix="bench-image-env-")
    env = {**os.environ, "MLOPS_ENV_CACHE": cache}
    if uv_cache:
        env["UV_CACHE_DIR"] = uv_cache
    try:
        result = json.loads(run_python(BUILD.format(image=IMAGE), env))
        assert result["built"], result
        result["cache"] = cache
        return result
    except BaseException:
        shutil.rmtree(cache, ignore_errors=True)
        raise


def bare_uv(requirements: tuple[str, ...], python: str) -> float:
    from mlops.local.images.environments import find_uv

    uv = find_uv()
    if uv is None:
        sys.exit("uv is not installed (pip install uv)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-bare-uv-"))
    try:
        start = time.perf_counter()
        subprocess.run([uv, "venv", "-q", "--python", python, str(tmp / "venv")], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(tmp / "venv" / "bin" / "python"), *requirements],
            check=True,
        )
        return time.perf_counter() - start
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also build with an empty uv cache (downloads)")
    args, _ = parser.parse_known_args()  # bench/run_all.py passes its own arguments on

    from mlops.local.images import environments as envs

    choice = envs.choose(IMAGE)
    interp = envs.find_interpreter(choice.python)
    rows: list[tuple[str, str]] = []
    caches = []
    try:
        if args.cold:
            uv_cache = tempfile.mkdtemp(prefix="bench-uv-cache-")
            try:
                print("  first build, empty uv cache ...", file=sys.stderr, flush=True)
                cold = first_build(uv_cache)
                caches.append(cold["cache"])
                rows.append(("first build, empty uv cache (downloads included)", f"{cold['total']:.1f} s"))
            finally:
                shutil.rmtree(uv_cache, ignore_errors=True)
        builds = []
        for i in range(args.repeat):
            print(f"  first build {i + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            builds.append(first_build(None))
            caches.append(builds[-1]["cache"])
        warm = statistics.median(b["total"] for b in builds)
        rows.append((f"first build, warm uv cache ({builds[0]['packages']} packages)", f"{warm:.1f} s"))
        per_phase = [phases(b["marks"]) for b in builds]
        for name in ("resolve", "venv", "install", "bytecode", "import check"):
            values = [p[name] for p in per_phase if name in p]
            if values:
                rows.append((f"  of which {name}", f"{statistics.median(values):.1f} s"))
        bare = statistics.median(bare_uv(choice.requirements, str(interp.path)) for _ in range(args.repeat))
        rows.append(("bare uv venv + uv pip install, warm uv cache", f"{bare:.1f} s"))

        os.environ["MLOPS_ENV_CACHE"] = builds[-1]["cache"]
        envs.prepare(IMAGE)  # warm the in-process path once
        times = []
        for _ in range(200):
            start = time.perf_counter()
            env = envs.prepare(IMAGE)
            times.append(time.perf_counter() - start)
            assert not env.built
        rows.append(
            ("cached lookup, in-process (median of 200)", f"{statistics.median(times) * 1000:.2f} ms")
        )
        lookup_env = {**os.environ, "MLOPS_ENV_CACHE": builds[-1]["cache"]}
        fresh = [float(run_python(LOOKUP.format(image=IMAGE), lookup_env)) for _ in range(args.repeat)]
        rows.append(
            ("cached lookup, fresh process incl. import", f"{statistics.median(fresh) * 1000:.0f} ms")
        )
    finally:
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)
    print(f"| {IMAGE.split('/', 1)[1]} environment | median |")
    print("| --- | --- |")
    for name, value in rows:
        print(f"| {name} | {value} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
