"""Load test of the local endpoint: single-row JSON, N concurrent keep-alive clients, from a separate process.

Starts a local endpoint (front + model server) on 127.0.0.1, then runs the load generator as its own
process twice: against the model server's internal port ("direct") and through the front (the public
port, what clients use). Prints requests/s, p50, p99 and errors for both.

    /work/main/.venv/bin/python bench/bench_endpoint.py [--seconds 20] [--clients 16] [--workers 2,1]
        [--model-dir DIR]      # default: a digits model trained here if steps/train/code exists, else a fixture

The load generator is asyncio (uvloop when installed) with raw HTTP/1.1 keep-alive connections: it shares
the 2 cores with the server, so its own CPU cost is part of the figures (stated in the output).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_RPS, GOAL_P99_MS = 1000, 20.0
MAX_SECONDS, MAX_CLIENTS = 120, 256


# ---- load generator (runs in its own process) -----------------------------------------------------------


async def _client(connect, request: bytes, stop_at: float, latencies: list[int], errors: list[str]) -> None:
    reader, writer = await connect()
    clock = time.perf_counter_ns
    try:
        while time.monotonic() < stop_at:
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            start = head.find(b"content-length:") + 15
            if start < 15:
                start = head.lower().find(b"content-length:") + 15
            length = int(head[start : head.find(b"\r\n", start)])
            await reader.readexactly(length)
            if status != b"200":
                errors.append(status.decode())
            else:
                latencies.append(clock() - started)
    except (OSError, asyncio.IncompleteReadError, ValueError) as err:
        errors.append(type(err).__name__)
    finally:
        writer.close()


async def _load(connect, body: bytes, clients: int, seconds: float) -> dict:
    request = (
        b"POST /invocations HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        b"accept: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    latencies: list[int] = []
    errors: list[str] = []
    # Warm-up: connections and the first requests (lazy paths in the server) are not measured.
    warm: list[int] = []
    await asyncio.gather(*(_client(connect, request, time.monotonic() + 1.0, warm, []) for _ in range(clients)))
    started = time.monotonic()
    cpu = time.process_time()
    await asyncio.gather(
        *(_client(connect, request, started + seconds, latencies, errors) for _ in range(clients))
    )
    elapsed = time.monotonic() - started
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] / 1e6 if n else float("nan")

    return {
        "requests": n,
        "all_requests": n + len(warm) + len(errors),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "seconds": round(elapsed, 2),
        "rps": n / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] / 1e6 if n else float("nan"),
        "loadgen_cpu_share": (time.process_time() - cpu) / elapsed,
    }


def load_main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    body = args.body.encode()
    if args.uds:  # a Unix socket; through its directory's fd, so any path length fits sun_path
        from mlops.serving import socket_address

        with socket_address(args.uds) as address:
            connect = functools.partial(asyncio.open_unix_connection, address)
            result = asyncio.run(_load(connect, body, args.clients, args.seconds))
    else:
        connect = functools.partial(asyncio.open_connection, "127.0.0.1", args.port)
        result = asyncio.run(_load(connect, body, args.clients, args.seconds))
    print(json.dumps(result))
    return 0


# ---- orchestration ---------------------------------------------------------------------------------------


def _fixture_model(root: Path) -> tuple[Path, str]:
    """A 64-in, 10-out MLP with the default handlers: the digits model's shape, random weights."""
    model_dir = root / "fixture-mlp"
    (model_dir / "code").mkdir(parents=True)
    (model_dir / "code" / "inference.py").write_text(
        "import torch\n\n\n"
        "def model_fn(model_dir):\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)).eval()\n"
    )
    return model_dir, "fixture MLP 64-64-10 with default JSON handlers (random weights)"


def _digits_model(root: Path) -> tuple[Path, str] | None:
    """The digits MLP of steps/train/code, trained here on sklearn's digits and saved the way train.py saves it."""
    code = ROOT / "steps" / "train" / "code"
    if not (code / "inference.py").is_file() or not (code / "model.py").is_file():
        return None
    import shutil

    import torch
    from sklearn.datasets import load_digits

    sys.path.insert(0, str(code))
    from model import build_model

    sys.path.remove(str(code))
    x, y = load_digits(return_X_y=True)
    config = {"input_size": 64, "hidden_units": 128, "num_classes": 10}
    torch.manual_seed(0)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    features, labels = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(features), labels).backward()
        optimizer.step()
    model_dir = root / "digits"
    (model_dir / "code").mkdir(parents=True)
    torch.save(model.state_dict(), model_dir / "model.pth")
    (model_dir / "model_config.json").write_text(json.dumps(config))
    for name in ("inference.py", "model.py"):
        shutil.copy(code / name, model_dir / "code" / name)
    return (
        model_dir,
        "digits MLP 64-128-128-10 served by steps/train/code/inference.py (trained here, 60 epochs)",
    )


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the uvicorn workers)."""
    pids, total = [pid], 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _run_load(port: int, clients: int, seconds: float, body: str) -> dict:
    cmd = [sys.executable, __file__, "--load-only", "--port", str(port), "--clients", str(clients)]
    cmd += ["--seconds", str(seconds), "--body", body]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if out.returncode != 0:
        raise SystemExit(f"load generator failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


def _worker_counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--workers {text!r}: give counts like 2 or 1,2") from None
    if not counts or len(counts) > 4 or not all(1 <= c <= 8 for c in counts):
        raise argparse.ArgumentTypeError(f"--workers {text!r}: 1 to 4 counts, each 1..8")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument(
        "--workers", type=_worker_counts, default=[2, 1], help="model server workers; a list runs each (2,1)"
    )
    parser.add_argument("--model-dir", type=Path)
    parser.add_argument(
        "--body", default=json.dumps([[float(i % 17) for i in range(64)]]), help="request JSON"
    )
    parser.add_argument("--only", choices=["direct", "front"], help="measure one path only")
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS or not 0 < args.clients <= MAX_CLIENTS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}] and --clients in (0, {MAX_CLIENTS}]")
    if args.load_only:
        return load_main(args)

    from rich.console import Console
    from rich.table import Table

    from mlops.serving import supervisor

    console = Console(width=180)
    load_before = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
        root = Path(tmp)
        if args.model_dir:
            model_dir, what = args.model_dir, f"model dir {args.model_dir}"
        else:
            with console.status("training the digits model ..."):
                model_dir, what = _digits_model(root) or _fixture_model(root)
        home = root / "home"
        for workers in args.workers:
            with console.status(f"starting endpoint ({workers} workers) ..."):
                info = supervisor.start_endpoint(
                    "bench", model_dir, supervisor.free_port(), home=home, workers=workers
                )
            try:
                check = supervisor.invoke("bench", args.body.encode(), home=home)
                if check.status != 200:
                    raise SystemExit(f"endpoint answered {check.status}: {check.body[:200]!r}")
                for label, port in [("direct", info.active.port), ("front", info.port)]:
                    if args.only and label != args.only:
                        continue
                    before = _cpu_seconds(info.active.process.pid), _cpu_seconds(info.front.pid)
                    with console.status(
                        f"{workers} workers, {label}: {args.clients} clients, {args.seconds:.0f}s"
                    ):
                        result = _run_load(port, args.clients, args.seconds, args.body)
                    after = _cpu_seconds(info.active.process.pid), _cpu_seconds(info.front.pid)
                    n = max(1, result["all_requests"])
                    result["server_us"] = (after[0] - before[0]) / n * 1e6
                    result["front_us"] = (after[1] - before[1]) / n * 1e6
                    rows.append((workers, label, result))
            finally:
                supervisor.stop_endpoint("bench", home=home)

    table = Table(
        title=f"local endpoint, single-row JSON, {args.clients} clients, {args.seconds:.0f}s, {os.cpu_count()} cores"
    )
    for col in (
        "workers",
        "path",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "requests",
        "errors",
        "server CPU µs/req",
        "front CPU µs/req",
        "loadgen CPU",
        "goal",
    ):
        table.add_column(col, justify="left" if col == "path" else "right")
    for workers, label, r in rows:
        ok = r["rps"] >= GOAL_RPS and r["p99_ms"] <= GOAL_P99_MS and r["errors"] == 0
        table.add_row(
            str(workers),
            "direct (model server port)" if label == "direct" else "via front (public port)",
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['max_ms']:.1f}",
            f"{r['requests']:,}",
            f"{r['errors']}" + (f" {r['error_kinds']}" if r["errors"] else ""),
            f"{r['server_us']:.0f}",
            f"{r['front_us']:.0f}" if label == "front" else "-",
            f"{r['loadgen_cpu_share']:.0%}",
            "met" if ok else "missed",
        )
    console.print(table)
    console.print(
        "CPU µs/req: CPU time of the model server (all workers) and of the front per request, warm-up included"
    )
    console.print(
        f"load average before the run: {load_before} (1/5/15 min; other work on the box skews figures)"
    )
    console.print(f"model: {what}; goal: >= {GOAL_RPS:,} req/s and p99 <= {GOAL_P99_MS:.0f} ms, no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
