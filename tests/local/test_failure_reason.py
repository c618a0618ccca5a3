"""Which host's error becomes a failed job's reason when several hosts fail."""

from __future__ import annotations

import pytest

from mlops.local.runtime.common import HostDirs, failure_reason

GLOO_ECHO = (
    "RuntimeError: [../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
    "[127.0.0.1]:5558. This is typically caused by a remote worker crashing."
)
WRAPPER = (
    "CalledProcessError: Command '['torchrun', '--nnodes', '2', 'train.py']' returned non-zero exit status 1."
)


def hosts_with(tmp_path, failure_files: dict[str, str]) -> list[HostDirs]:
    hosts = []
    for name in ("algo-1", "algo-2"):
        h = HostDirs(name, tmp_path / name)
        (h.ml / "output").mkdir(parents=True)
        if name in failure_files:
            (h.ml / "output" / "failure").write_text(failure_files[name])
        hosts.append(h)
    return hosts


@pytest.mark.parametrize("echo_host", ["algo-1", "algo-2"])
def test_the_rank_that_raised_is_the_reason_not_the_peer_that_lost_it(tmp_path, echo_host):
    cause_host = "algo-2" if echo_host == "algo-1" else "algo-1"
    hosts = hosts_with(tmp_path, {"algo-1": WRAPPER, "algo-2": WRAPPER})
    tails = {
        echo_host: ["Traceback (most recent call last):", GLOO_ECHO],
        cause_host: [
            "Traceback (most recent call last):",
            "ValueError: shard 7 of the training data has 0 rows",
        ],
    }
    reason = failure_reason("output/failure", hosts, [1, 1], tails)
    assert reason.startswith("ValueError: shard 7 of the training data has 0 rows"), reason


def test_a_peer_loss_is_still_the_reason_when_it_is_all_there_is(tmp_path):
    hosts = hosts_with(tmp_path, {})
    reason = failure_reason("output/failure", hosts, [1, 0], {"algo-1": [GLOO_ECHO]})
    assert reason.startswith("RuntimeError: [") and "Connection closed by peer" in reason


def test_a_host_we_stopped_comes_after_the_one_that_failed(tmp_path):
    hosts = hosts_with(tmp_path, {"algo-2": "disk full on shard 3"})
    reason = failure_reason("output/failure", hosts, [-15, 2], {"algo-1": ["KeyboardInterrupt: stopped"]})
    assert reason == "disk full on shard 3"


@pytest.mark.parametrize(
    "split",
    [
        ["[algo-1] ModuleNotFoundError", "[algo-1] :", "[algo-1] No module named 'torchvision'"],
        ["ModuleNotFoundError", "", ": No module named 'torchvision'"],
    ],
)
def test_an_error_line_the_toolkit_relayed_in_pieces_is_joined_again(tmp_path, split):
    hosts = hosts_with(tmp_path, {"algo-1": WRAPPER})
    tails = {
        "algo-1": ["Traceback (most recent call last):", '  File "/opt/ml/code/mnist.py", line 15', *split]
    }
    reason = failure_reason("output/failure", hosts[:1], [1], tails)
    assert reason.startswith("ModuleNotFoundError: No module named 'torchvision'"), reason
