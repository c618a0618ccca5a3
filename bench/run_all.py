"""Run every benchmark in bench/ and print their tables (`make bench`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    ("compile vs bare SDK", ["bench_compile.py"]),
    ("data-quality step vs bare great-expectations (1M rows)", ["bench_data_quality.py"]),
    ("local executor", ["bench_local_run.py"]),
    ("local endpoint under load", ["bench_endpoint.py"]),
    ("S3 API inside a job vs local disk", ["bench_s3_api.py"]),
    ("image environment: first build vs cached", ["bench_image_env.py"]),
    ("batch transform vs the model's predict in a loop", ["bench_transform.py"]),
    ("asynchronous inference end to end vs InvokeEndpoint", ["bench_async.py"]),
    ("multi-model endpoint: cold and warm", ["bench_multi_model.py"]),
    ("tuning step vs the same number of training steps", ["bench_tuning.py"]),
]


def main() -> int:
    failed = 0
    for title, argv in BENCHES:
        script = HERE / argv[0]
        if not script.is_file():
            continue
        print(f"\n## {title}\n", flush=True)
        failed += subprocess.run([sys.executable, str(script), *argv[1:], *sys.argv[1:]]).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
