"""A crashed model server is replaced by the front's watchdog, as SageMaker replaces an unhealthy instance."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from mlops.serving import supervisor
from mlops.serving.supervisor import ProcessRef

RECOVER_S = 30.0  # bound on each recovery: detection (0.5 s) + a fresh server loading a numpy model


def invoke_until_ok(name: str, home: Path, limit_s: float = RECOVER_S) -> tuple[float, list[int]]:
    """POST through the front until it answers 200; (seconds it took, the statuses seen on the way)."""
    started, seen = time.monotonic(), []
    while time.monotonic() - started < limit_s:
        try:
            result = supervisor.post(supervisor.get_endpoint(name, home=home).url, b"[2, 3]", timeout=5)
        except supervisor.EndpointError:
            seen.append(0)
        else:
            if result.status == 200:
                assert result.body == b"[5.0]"
                return time.monotonic() - started, seen
            seen.append(result.status)
        time.sleep(0.1)
    raise AssertionError(f"{name} did not answer 200 within {limit_s:.0f}s (saw {sorted(set(seen))})")


def group_alive(pgid: int) -> bool:
    """Any live (not zombie: an exited child waits for its reaper) process in the group."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def recorded(name: str, home: Path, status: str, limit_s: float = 10.0):
    """The endpoint once its last history entry is ``status``: the front may forward to a replacement a
    moment before the supervisor has written the entry that records it."""
    deadline = time.monotonic() + limit_s
    while (now := supervisor.get_endpoint(name, home=home)).deployments[-1].status != status:
        if time.monotonic() > deadline:
            raise AssertionError(f"{name}: last entry is {now.deployments[-1]}, not {status}")
        time.sleep(0.05)
    return now


def restarts(name: str, home: Path) -> int:
    return sum(d.status == supervisor.RESTARTED for d in supervisor.get_endpoint(name, home=home).deployments)


def test_a_killed_model_server_is_replaced_and_answers_again(home, sum_model):
    info = supervisor.start_endpoint("crashy", sum_model, supervisor.free_port(), home=home, workers=2)
    first = info.active
    invoke_until_ok("crashy", home, limit_s=5)

    os.killpg(
        first.process.pid, signal.SIGKILL
    )  # the server and its workers: nothing answers behind the front
    _, seen = invoke_until_ok("crashy", home)
    now = recorded("crashy", home, supervisor.RESTARTED)
    assert now.status == "InService" and now.front.pid == info.front.pid  # the front itself stayed up
    second = now.active
    assert second.process.pid != first.process.pid and second.process.alive()
    assert (second.version, second.variant, second.workers) == (first.version, first.variant, 2)
    last = now.deployments[-1]
    assert last.status == supervisor.RESTARTED and f"pid {first.process.pid} exited" in last.reason
    assert set(seen) <= {502}  # in between the front says why; it never hangs or resets
    assert restarts("crashy", home) == 1

    os.kill(second.process.pid, signal.SIGKILL)  # only the parent: its two workers are left orphaned
    deadline = time.monotonic() + RECOVER_S
    while restarts("crashy", home) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert restarts("crashy", home) == 2
    assert not group_alive(second.process.pid)  # the orphans were killed, not left serving an old process
    invoke_until_ok("crashy", home)
    third = supervisor.get_endpoint("crashy", home=home).active
    assert third.process.pid not in (first.process.pid, second.process.pid)

    supervisor.stop_endpoint("crashy", home=home)  # the replacement is the one recorded: stop ends it
    assert not third.process.alive() and not info.front.alive()
    assert not group_alive(third.process.pid)
    assert supervisor.get_endpoint("crashy", home=home).status == "Stopped"


def test_restart_dead_version_leaves_live_and_stopped_endpoints_alone(home, sum_model):
    supervisor.start_endpoint("steady", sum_model, supervisor.free_port(), home=home, workers=1)
    assert supervisor.restart_dead_version("steady", home=home) is None  # alive: nothing to do
    assert supervisor.restart_dead_version("steady", home=home, front_pid=1) is None  # not that front's
    supervisor.stop_endpoint("steady", home=home)
    assert supervisor.restart_dead_version("steady", home=home) is None  # Stopped on purpose


def test_a_replacement_that_cannot_load_is_recorded_and_retried(home, tmp_path, make_model, monkeypatch):
    model_dir = make_model(tmp_path / "models", "fragile")
    info = supervisor.start_endpoint("fragile", model_dir, supervisor.free_port(), home=home, workers=1)
    (model_dir / "offset.txt").write_text("not a number")  # model_fn now fails: every restart fails
    os.killpg(info.active.process.pid, signal.SIGKILL)
    deadline = time.monotonic() + RECOVER_S
    while time.monotonic() < deadline:
        history = supervisor.get_endpoint("fragile", home=home).deployments
        if any(d.status == "Failed" and "restart failed" in d.reason for d in history):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no failed restart was recorded")
    assert supervisor.get_endpoint("fragile", home=home).status == "Failed"
    (model_dir / "offset.txt").write_text("0")  # fixed: the next try (after a pause) succeeds
    invoke_until_ok("fragile", home, limit_s=RECOVER_S)
    recorded("fragile", home, supervisor.RESTARTED)
    assert isinstance(supervisor.get_endpoint("fragile", home=home).active.process, ProcessRef)
