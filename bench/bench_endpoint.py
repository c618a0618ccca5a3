"""Load test of the local endpoint vs bare uvicorn: single-row JSON, N keep-alive clients, own process.

For each worker count, the same load generator (its own process, same code, same request) measures:

- "bare uvicorn": the baseline, the simplest thing a user would write. bench/bare_uvicorn_app.py is a raw
  ASGI app (no starlette, no toolkit code) that imports the model dir's ``code/inference.py``, calls
  ``model_fn`` once per worker and answers ``POST /invocations`` with
  ``output_fn(predict_fn(input_fn(body, content_type), model), accept)`` and ``GET /ping`` with 200, run by
  plain ``uvicorn --workers N`` (auto loop/http: uvloop + httptools, as our server uses), unsandboxed. It is
  measured on a 127.0.0.1 port and, when our model server is sandboxed, also on a Unix socket.
- "ours direct": our model server (mlops.serving.server under the supervisor, N workers) without the front,
  where the host reaches it: its Unix socket when it runs sandboxed (bwrap, the default), its internal
  127.0.0.1 port with ``MLOPS_SANDBOX=none``.
- "ours via front": through the endpoint's front, on the public port (TCP), what clients use.

Prints requests/s, p50, p99, errors and CPU per request for each row, and ours/bare ratios of req/s and p99,
each of our rows against bare uvicorn on the same transport (direct: the socket it uses; front: TCP). Before
measuring, the bench checks that the endpoint and bare uvicorn answer the request with the same bytes.

    /work/main/.venv/bin/python bench/bench_endpoint.py [--seconds 20] [--clients 16] [--workers 2,1]
        [--model-dir DIR]      # default: a digits model trained here if steps/train/code exists, else a fixture
        [--only bare|direct|front]

The load generator is asyncio (uvloop when installed) with raw HTTP/1.1 keep-alive connections: it shares
the 2 cores with the server, so its own CPU cost is part of the figures (stated in the output). Every server
it starts (bare uvicorn's process group, the endpoint) is stopped however the run ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

GOAL_RPS, GOAL_P99_MS = 1000, 20.0
MAX_SECONDS, MAX_CLIENTS = 120, 256
TCP, UDS = "TCP 127.0.0.1", "unix socket"
LABELS = {
    "bare": "bare uvicorn",
    "direct": "ours direct",
    "front": "ours via front",
}


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
    await asyncio.gather(
        *(_client(connect, request, time.monotonic() + 1.0, warm, []) for _ in range(clients))
    )
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
    """User + system CPU of a process and all its live descendants (uvicorn workers; inside a sandbox:
    bwrap -> bwrap -> server -> workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _run_load(address: int | str, clients: int, seconds: float, body: str) -> dict:
    """The load generator in its own process, on ``127.0.0.1:address`` (a port) or the Unix socket ``address``."""
    cmd = [sys.executable, __file__, "--load-only", "--clients", str(clients)]
    cmd += ["--port", str(address)] if isinstance(address, int) else ["--uds", address]
    cmd += ["--seconds", str(seconds), "--body", body]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if out.returncode != 0:
        raise SystemExit(f"load generator failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


def _request(address: int | str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    from mlops.serving import http_connection

    conn = http_connection(address, timeout=10)
    try:
        headers = {"content-type": "application/json", "accept": "application/json"} if body else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def _bare_uvicorn(model_dir: Path, workers: int, root: Path, uds: bool) -> Iterator[tuple[int, int | str]]:
    """The bare app (bare_uvicorn_app.py) under plain ``uvicorn --workers N``, unsandboxed, on a 127.0.0.1
    port or (``uds``) a Unix socket; yields (pid, address) once every worker has loaded the model and /ping
    answers. The whole process group is stopped on the way out, whatever happened."""
    from mlops.serving import supervisor

    run = Path(tempfile.mkdtemp(prefix="bare-", dir=root))
    ready = run / "ready"
    ready.mkdir()
    address: int | str = str(run / "bare.sock") if uds else supervisor.free_port()
    cmd = [sys.executable, "-m", "uvicorn", "bare_uvicorn_app:app", "--app-dir", str(HERE)]
    cmd += ["--workers", str(workers), "--lifespan", "off", "--no-access-log", "--log-level", "warning"]
    cmd += ["--uds", address] if uds else ["--host", "127.0.0.1", "--port", str(address)]
    env = {**os.environ, "BARE_MODEL_DIR": str(model_dir), "BARE_READY_DIR": str(ready)}
    log_path = run / "uvicorn.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=run, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise SystemExit(f"bare uvicorn exited with {proc.returncode}: {tail}")
            if time.monotonic() > deadline:
                raise SystemExit(f"bare uvicorn not ready after 120s (log: {log_path})")
            if sum(1 for _ in ready.iterdir()) >= workers:
                with contextlib.suppress(OSError):
                    if _request(address, "GET", "/ping")[0] == 200:
                        break
            time.sleep(0.05)
        yield proc.pid, address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # the main one lingered, or left a worker behind
        proc.wait()


def _measure(address: int | str, args: argparse.Namespace, server_pid: int, front_pid: int | None) -> dict:
    pids = [server_pid] + ([front_pid] if front_pid else [])
    before = [_cpu_seconds(p) for p in pids]
    result = _run_load(address, args.clients, args.seconds, args.body)
    after = [_cpu_seconds(p) for p in pids]
    n = max(1, result["all_requests"])
    result["server_us"] = (after[0] - before[0]) / n * 1e6
    result["front_us"] = (after[1] - before[1]) / n * 1e6 if front_pid else None
    return result


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
    parser.add_argument("--only", choices=list(LABELS), help="measure one row kind only")
    parser.add_argument("--load-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--uds", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS or not 0 < args.clients <= MAX_CLIENTS:
        parser.error(f"--seconds must be in (0, {MAX_SECONDS}] and --clients in (0, {MAX_CLIENTS}]")
    if args.load_only:
        return load_main(args)

    from rich.console import Console
    from rich.table import Table

    from mlops import isolation
    from mlops.serving import supervisor

    console = Console(width=200)
    load_before = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    # Where the host reaches our model server: a Unix socket when it is sandboxed, else a 127.0.0.1 port.
    sandboxed = isolation.sandbox_mode() == isolation.BWRAP
    direct_transport = UDS if sandboxed else TCP
    # The bare server on a 127.0.0.1 port (what a user writes; the front's clients use TCP too) and, when
    # our direct row is a Unix socket, on one as well: each of our rows is compared on its own transport.
    bare_transports = [TCP, UDS] if sandboxed else [TCP]
    rows: list[tuple[int, str, str, dict]] = []
    with tempfile.TemporaryDirectory(prefix="bench-endpoint-") as tmp:
        root = Path(tmp)
        if args.model_dir:
            model_dir, what = args.model_dir.resolve(), f"model dir {args.model_dir}"
        else:
            with console.status("training the digits model ..."):
                model_dir, what = _digits_model(root) or _fixture_model(root)
        home = root / "home"
        for workers in args.workers:
            bare_answer = None
            for transport in bare_transports if args.only in (None, "bare") else []:
                with contextlib.ExitStack() as stack:  # the bare server is stopped however this ends
                    with console.status(f"starting bare uvicorn ({workers} workers, {transport}) ..."):
                        bare = _bare_uvicorn(model_dir, workers, root, uds=transport == UDS)
                        pid, address = stack.enter_context(bare)
                    status, bare_answer = _request(address, "POST", "/invocations", args.body.encode())
                    if status != 200:
                        raise SystemExit(f"bare uvicorn answered {status}: {bare_answer[:200]!r}")
                    with console.status(
                        f"{workers} workers, bare uvicorn ({transport}): {args.clients} clients, {args.seconds:.0f}s"
                    ):
                        rows.append((workers, "bare", transport, _measure(address, args, pid, None)))
            if args.only == "bare":
                continue
            with console.status(f"starting endpoint ({workers} workers) ..."):
                info = supervisor.start_endpoint(
                    "bench", model_dir, supervisor.free_port(), home=home, workers=workers
                )
            try:
                check = supervisor.invoke("bench", args.body.encode(), home=home)
                if check.status != 200:
                    raise SystemExit(f"endpoint answered {check.status}: {check.body[:200]!r}")
                if bare_answer is not None and bytes(check.body) != bare_answer:
                    raise SystemExit(
                        f"the endpoint and bare uvicorn answer differently: {check.body[:120]!r} vs {bare_answer[:120]!r}"
                    )
                targets = [
                    ("direct", direct_transport, info.active.socket or info.active.port, None),
                    ("front", TCP, info.port, info.front.pid),
                ]
                for label, transport, address, front_pid in targets:
                    if args.only and label != args.only:
                        continue
                    with console.status(
                        f"{workers} workers, {label}: {args.clients} clients, {args.seconds:.0f}s"
                    ):
                        result = _measure(address, args, info.active.process.pid, front_pid)
                    rows.append((workers, label, transport, result))
            finally:
                supervisor.stop_endpoint("bench", home=home)

    baseline = {(w, t): r for w, label, t, r in rows if label == "bare"}
    table = Table(
        title=f"local endpoint, single-row JSON, {args.clients} clients, {args.seconds:.0f}s, {os.cpu_count()} cores"
    )
    for col in (
        "workers",
        "server",
        "transport",
        "requests/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "requests",
        "errors",
        "server CPU µs/req",
        "front CPU µs/req",
        "loadgen CPU",
        "req/s ours/bare",
        "p99 ours/bare",
        "goal",
    ):
        left = col in ("server", "transport")
        table.add_column(col, justify="left" if left else "right", no_wrap=left)
    for workers, label, transport, r in rows:
        ok = r["rps"] >= GOAL_RPS and r["p99_ms"] <= GOAL_P99_MS and r["errors"] == 0
        base = baseline.get((workers, transport)) if label != "bare" else None
        table.add_row(
            str(workers),
            LABELS[label],
            transport,
            f"{r['rps']:,.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['max_ms']:.1f}",
            f"{r['requests']:,}",
            f"{r['errors']}" + (f" {r['error_kinds']}" if r["errors"] else ""),
            f"{r['server_us']:.0f}",
            f"{r['front_us']:.0f}" if r["front_us"] is not None else "-",
            f"{r['loadgen_cpu_share']:.0%}",
            f"{r['rps'] / base['rps']:.2f}x" if base and base["rps"] else "-",
            f"{r['p99_ms'] / base['p99_ms']:.2f}x" if base and base["p99_ms"] else "-",
            "met" if ok else "missed",
        )
    console.print(table)
    console.print(
        "bare uvicorn: bench/bare_uvicorn_app.py, the same code/inference.py handlers in a raw ASGI app under "
        "plain `uvicorn --workers N`, unsandboxed; ours direct: the model server's "
        + ("Unix socket (it runs sandboxed, bwrap)" if sandboxed else "internal port (MLOPS_SANDBOX=none)")
        + "; via front: the endpoint's public port"
    )
    console.print(
        "CPU µs/req: CPU time of the server (all workers) and of the front per request, warm-up included"
    )
    console.print(
        "ours/bare: each of our rows against bare uvicorn on the same transport (direct: "
        f"{direct_transport}; front: its public TCP port vs bare on a TCP port); req/s below 1x and p99 above "
        "1x are what our server (and front) cost over the simplest app"
    )
    console.print(
        f"load average before the run: {load_before} (1/5/15 min; other work on the box skews figures)"
    )
    console.print(f"model: {what}; goal: >= {GOAL_RPS:,} req/s and p99 <= {GOAL_P99_MS:.0f} ms, no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
