"""Two checkouts side by side, one installed mlops: each command uses the checkout it runs in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.project import ROOT

MLOPS = str(Path(sys.executable).parent / "mlops")  # the installed console script, not a checkout's package
SKIP = {".venv", ".venv-checkov", ".mlops", "build", ".git", "__pycache__", ".pytest_cache", ".ruff_cache"}
TINY = {
    "Version": "2020-12-01",
    "Parameters": [{"Name": "Go", "Type": "Boolean", "DefaultValue": True}],
    "Steps": [
        {
            "Name": "Check",
            "Type": "Condition",
            "Arguments": {
                "Conditions": [{"Type": "Equals", "LeftValue": {"Get": "Parameters.Go"}, "RightValue": True}],
                "IfSteps": [],
                "ElseSteps": [],
            },
        }
    ],
}


def _clone(dest: Path) -> Path:
    shutil.copytree(ROOT, dest, ignore=lambda _dir, names: [n for n in names if n in SKIP])
    return dest


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS")}
    return env


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([MLOPS, *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def clones(tmp_path_factory):
    base = tmp_path_factory.mktemp("clones")
    a, b = _clone(base / "a"), _clone(base / "b")
    local = b / "config" / "local.yaml"
    local.write_text(local.read_text() + "\nproject:\n  name: second-clone\n")
    dev = b / "config" / "dev.yaml"
    overlay = yaml.safe_load(dev.read_text())
    overlay.setdefault("aws", {})["bucket"] = "Not_A_Bucket"
    dev.write_text(yaml.safe_dump(overlay))
    declaration = b / "pipelines" / "project.py"
    declaration.write_text(
        declaration.read_text().replace("default_pipeline=BUILD", "default_pipeline=DEPLOY")
    )
    for clone in (a, b):
        (clone / "tiny.json").write_text(json.dumps(TINY))
    return a, b


def test_each_clone_reads_its_own_config(clones):
    a, b = clones
    names = [json.loads(run(c, "config", "--format", "json").stdout)["project"]["name"] for c in (a, b)]
    assert names == ["digits", "second-clone"]
    assert run(a, "config", "--env", "dev").returncode == 0
    broken = run(b / "steps", "config", "--env", "dev")  # from a sub-directory: the root is found upward
    assert broken.returncode == 2
    assert "config/dev.yaml: aws.bucket: not a valid S3 bucket name" in broken.stderr


def test_each_clone_runs_its_own_declaration(clones):
    a, b = clones
    graph_a, graph_b = run(a, "graph"), run(b, "graph")
    assert graph_a.returncode == 0 and graph_b.returncode == 0, graph_a.stderr + graph_b.stderr
    assert "Preprocess" in graph_a.stdout and "CreateModel" not in graph_a.stdout
    assert "CreateModel" in graph_b.stdout and "Preprocess" not in graph_b.stdout


def test_each_clone_keeps_its_own_home(clones):
    a, b = clones
    for clone in (a, b):
        proc = run(clone, "run", "--definition", "tiny.json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = []
    for clone in (a, b):
        assert (clone / ".mlops" / "mlops.db").is_file()
        rows = json.loads(run(clone, "executions", "list", "--format", "json").stdout)
        assert [r["status"] for r in rows] == ["Succeeded"]
        ids.append(rows[0]["id"])
    assert ids[0] != ids[1]
    assert not (ROOT / "tiny.json").exists()
