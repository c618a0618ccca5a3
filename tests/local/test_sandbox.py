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

from mlops import isolation
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
    assert json.loads(opt) == [
        "ml"
    ]  # the root is built from what the job needs: the host's /opt is not there
    assert not os.path.exists(marker)  # the sandbox's /tmp is its own


def test_root_holds_the_system_and_interpreter_but_not_the_host(tmp_path, bwrap_mode):
    code = textwrap.dedent(
        """
        import os, sys
        for p in ["/usr/bin", "/etc/passwd", sys.prefix, sys.base_prefix, "/proc/self", "/dev/null"]:
            print("present" if os.path.exists(p) else "missing:" + p)
        for p in ["/run", "/var", "/home", "/srv", "/mnt", "/opt"]:
            print("hidden" if not os.path.exists(p) or not os.listdir(p) else "visible:" + p)
        for d in sys.argv[1:]:  # $HOME, the checkout: only the way to an interpreter that lives there
            print(sorted(os.listdir(d)) if os.path.isdir(d) else [])
        open(os.path.join(os.environ["HOME"], "x"), "w").write("home is writable")
        print(os.environ["HOME"])
        """
    )
    from mlops.project import TOOLKIT_ROOT

    dirs = [os.path.expanduser("~"), str(TOOLKIT_ROOT)]
    lines = []
    res = run_group(
        [Instance("algo-1", ["python3", "-c", code, *dirs], {"PATH": f"{PY}:/usr/bin:/bin"}, [], cwd="/")],
        work_dir=tmp_path / "w", log_paths=[tmp_path / "algo.log"],
        on_line=lambda h, stream, line: lines.append(line) if stream == "stdout" else None,
    )  # fmt: skip
    assert res.exit_codes == [0], res.stderr_tail
    assert lines[:12] == ["present"] * 6 + ["hidden"] * 6
    for d, listing in zip(dirs, lines[12:14], strict=True):
        on_the_way = {
            os.path.relpath(t, d).split("/")[0] for _, t in sandbox.root_binds() if t.startswith(d + "/")
        }
        assert set(eval(listing)) <= on_the_way  # e.g. ['.pyenv'] or ['.venv'], never ~/.gitconfig or .mlops
    assert lines[14] == sandbox.HOME_DIR


def test_only_the_allow_listed_environment_reaches_the_job(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_host")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret")
    monkeypatch.setenv("SM_FROM_HOST", "x")
    env = {
        "PATH": "/bin", "LANG": "C.UTF-8", "GITHUB_TOKEN": "ghp_host", "DATABASE_URL": "postgres://x",
        "AWS_SECRET_ACCESS_KEY": "host-secret", "SM_FROM_HOST": "x", "SM_MODEL_DIR": "/opt/ml/model",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "MY_SETTING": "1", "HF_TOKEN": "from-the-definition",
    }  # fmt: skip
    inst = Instance("algo-1", ["true"], env, declared_env={"MY_SETTING", "HF_TOKEN"})
    assert sandbox.job_environment(inst, "/root") == {
        "PATH": "/bin", "LANG": "C.UTF-8", "SM_MODEL_DIR": "/opt/ml/model",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:1", "MY_SETTING": "1", "HF_TOKEN": "from-the-definition",
        "HOME": "/root",
    }  # fmt: skip


def test_job_environment_in_both_modes(tmp_path, mode, monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_host")
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    env = {"PATH": f"{PY}:/usr/bin:/bin", "GITHUB_TOKEN": "ghp_host", "SM_HOSTS": '["algo-1"]', "MINE": "1"}
    res = run_group(
        [Instance("algo-1", ["python3", "-c", code], env, [], cwd="/", declared_env={"MINE"})],
        work_dir=tmp_path / "w", log_paths=[tmp_path / "l"],
    )  # fmt: skip
    assert res.exit_codes == [0]
    seen = json.loads((tmp_path / "l").read_text().splitlines()[0].split(" ", 1)[1])
    assert set(seen) - {"LC_CTYPE", "PWD"} == {"PATH", "SM_HOSTS", "MINE", "HOME"}  # bwrap sets PWD
    assert os.access(seen["HOME"], os.W_OK) or mode == sandbox.BWRAP


def test_instance_type_limits_memory_and_cpus(tmp_path, mode):
    from mlops.local.runtime import instances

    code = "import os; print(len(os.sched_getaffinity(0)), flush=True); bytearray(12 << 30)"
    env = {"PATH": f"{PY}:/usr/bin:/bin"}
    started, lines = time.monotonic(), []
    res = run_group(
        [Instance("algo-1", ["python3", "-c", code], env, [], cwd="/", instance_type="ml.t3.medium")],
        work_dir=tmp_path / "w", log_paths=[tmp_path / "l"],
        on_line=lambda h, stream, line: lines.append(line) if stream == "stdout" else None,
    )  # fmt: skip
    assert time.monotonic() - started < 30
    assert res.exit_codes == [1] and "MemoryError" in res.stderr_tail["algo-1"][-1]
    limits = instances.limits_for("ml.t3.medium")
    assert limits.memory <= 4 * instances.GIB and len(limits.cpus) <= 2
    assert lines == [str(len(limits.cpus))]


@pytest.mark.parametrize(
    "itype, vcpus, gib",
    [("ml.m5.large", 2, 8), ("ml.p3.2xlarge", 8, 61), ("ml.m5.8xlarge", 32, 128), ("ml.x9.large", 2, 8)],
)
def test_published_instance_sizes(itype, vcpus, gib):
    from mlops.local.runtime import instances

    assert instances.published(itype) == (vcpus, gib)
    assert instances.published("local") is None and instances.limits_for("local") is None
    limits = instances.limits_for(itype)
    assert limits.memory <= instances.machine_memory() and len(limits.cpus) <= len(os.sched_getaffinity(0))


def test_no_namespaces_refuses_unless_sandbox_none(monkeypatch):
    monkeypatch.delenv("MLOPS_SANDBOX", raising=False)
    monkeypatch.setattr(isolation, "bwrap_works", lambda: False)
    with pytest.raises(SandboxError, match="MLOPS_SANDBOX=none"):
        sandbox.sandbox_mode()
    monkeypatch.setenv("MLOPS_SANDBOX", "none")
    assert sandbox.sandbox_mode() == sandbox.NONE


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
    assert len([r for r in caplog.records if "WITHOUT isolation" in r.message]) == 1


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
