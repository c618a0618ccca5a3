"""The namespace sandbox and its mapped-paths fallback, on real bwrap and real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from mlops.local.runtime import sandbox
from mlops.local.runtime.sandbox import Instance, Mount, SandboxError, mount_plan, path_rewriter, run_group

PY = str(Path(sys.executable).parent)


def run_one(tmp_path, code: str, mounts=(), host="algo-1", mode=None):
    """Runs ``python3 -c code`` as one instance; returns (exit code, stdout lines, stderr tail)."""
    lines = []
    env = {"PATH": f"{PY}:/usr/bin:/bin"}
    res = run_group(
        [Instance(host, ["python3", "-c", code], env, list(mounts), cwd="/")],
        work_dir=tmp_path / "w",
        log_paths=[tmp_path / "algo.log"],
        on_line=lambda h, stream, line: lines.append(line) if stream == "stdout" else None,
        mode=mode,
    )
    return res.exit_codes[0], lines, res.stderr_tail[host]


def test_host_root_is_read_only_and_tmp_private(tmp_path, bwrap_mode):
    marker = f"/tmp/mlops-sandbox-{uuid.uuid4().hex}"
    code = textwrap.dedent(
        f"""
        import json, os, socket
        try:
            open("/usr/mlops-should-not-exist", "w")
            print("usr-writable")
        except OSError:
            print("usr-read-only")
        open("{marker}", "w").write("x")
        print(socket.gethostname(), json.dumps(sorted(os.listdir("/opt"))))
        """
    )
    code_rc, lines, tail = run_one(tmp_path, code, [Mount("/opt/ml", tmp_path)], host="algo-3")
    assert code_rc == 0, tail
    assert lines[0] == "usr-read-only"
    host, opt = lines[1].split(" ", 1)
    assert host == "algo-3"
    assert json.loads(opt) == sorted({*os.listdir("/opt"), "ml"})  # the real /opt entries, plus /opt/ml
    assert not os.path.exists(marker)  # the sandbox's /tmp is its own


def test_mounts_at_paths_that_do_not_exist_on_the_host(tmp_path, bwrap_mode):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("hello")
    etc_target = f"/etc/mlops-{uuid.uuid4().hex[:8]}/conf"
    code = f"print(open('/mlops-test/deep/in/in.txt').read()); open('{etc_target}/c', 'w').write('c')"
    conf = tmp_path / "conf"
    conf.mkdir()
    rc, lines, tail = run_one(
        tmp_path, code, [Mount("/mlops-test/deep/in", data, read_only=True), Mount(etc_target, conf)]
    )
    assert rc == 0, tail
    assert lines == ["hello"] and (conf / "c").read_text() == "c"
    assert not os.path.exists("/mlops-test") and not os.path.exists(os.path.dirname(etc_target))


def test_read_only_mount_refuses_writes(tmp_path, bwrap_mode):
    rc, _, tail = run_one(tmp_path, "open('/opt/ml/x', 'w')", [Mount("/opt/ml", tmp_path, read_only=True)])
    assert rc == 1 and "Read-only file system" in tail[-1]


@pytest.mark.parametrize(
    "target, fragment",
    [
        ("relative/path", "must be absolute"),
        ("/opt/../etc", "without '..'"),
        ("/bin/sub", "is not a directory on this machine"),  # /bin is a symlink on merged-/usr systems
    ],
)
def test_bad_mount_targets_are_refused(tmp_path, target, fragment):
    if target == "/bin/sub" and not os.path.islink("/bin"):
        pytest.skip("/bin is not a symlink here")
    with pytest.raises(SandboxError) as err:
        mount_plan([Mount(target, tmp_path)])
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("/opt/ml/model", "/HOST/ml/model"),
        ("/opt/ml", "/HOST/ml"),
        ("--out=/opt/ml/output/data", "--out=/HOST/ml/output/data"),
        ("a:/opt/ml/x:b", "a:/HOST/ml/x:b"),
        ('["/opt/ml/input/data/train"]', '["/HOST/train"]'),
        ("/opt/mlx/model", "/opt/mlx/model"),
        ("/srv/opt/ml/model", "/srv/opt/ml/model"),
        ("/data/in/x.csv", "/HOST/data-in/x.csv"),
    ],
)
def test_mapped_paths_rewrite(text, expected):
    rewrite = path_rewriter(
        [
            Mount("/opt/ml", Path("/HOST/ml")),
            Mount("/opt/ml/input/data/train", Path("/HOST/train")),
            Mount("/data/in", Path("/HOST/data-in")),
        ]
    )
    assert rewrite(text) == expected


def test_mapped_mode_rewrites_argv_env_and_warns_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(sandbox, "_warned_mapped", False)
    code = "import os, sys; print(sys.argv[1]); print(os.environ['SM_MODEL_DIR'])"
    for _ in range(2):
        res = run_group(
            [Instance("algo-1", ["python3", "-c", code, "/opt/ml/model"], {"PATH": PY, "SM_MODEL_DIR": "/opt/ml/model"},
                      [Mount("/opt/ml", tmp_path)])],
            work_dir=tmp_path / "w", log_paths=[tmp_path / "l"], mode=sandbox.NONE,
        )  # fmt: skip
        assert res.exit_codes == [0] and res.mode == "none"
    assert (tmp_path / "l").read_text().splitlines()[:2] == [f"[algo-1] {tmp_path}/model"] * 2
    assert len([r for r in caplog.records if "mapped paths" in r.message]) == 1


def test_forced_mode_must_be_known(monkeypatch):
    monkeypatch.setenv("MLOPS_SANDBOX", "docker")
    with pytest.raises(SandboxError, match="MLOPS_SANDBOX='docker' is not one of bwrap, none"):
        sandbox.sandbox_mode()


EXECUTOR = """
import sys, threading
from pathlib import Path
from mlops.local.runtime.sandbox import Instance, run_group
tmp, marker, mode = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120) # ' + sys.argv[1]]); time.sleep(120)"
run_group([Instance("algo-1", [sys.executable, "-c", code, marker], {}, [])],
          work_dir=tmp / "w", log_paths=[tmp / "l"], mode=mode)
"""


def marked(marker: str) -> list[int]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_job_processes_die_with_the_executor(tmp_path, mode):
    marker = f"orphan-check-{uuid.uuid4().hex}"
    executor = subprocess.Popen(
        [sys.executable, "-c", EXECUTOR, str(tmp_path), marker, mode], cwd=Path(__file__).parents[2]
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(marked(f"# {marker}")) < 1:
            time.sleep(0.05)
        assert marked(f"# {marker}"), "the job's grandchild never started"
        os.kill(executor.pid, signal.SIGKILL)
        executor.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and marked(marker):
            time.sleep(0.05)
        assert marked(marker) == []
    finally:
        if executor.poll() is None:
            executor.kill()
        for pid in marked(marker):
            os.kill(pid, signal.SIGKILL)
