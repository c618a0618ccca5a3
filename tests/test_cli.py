"""The CLI's one boundary: bare mlops, --debug, one-line errors, a closed pipe, the --env policy."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.project import ROOT


def mlops(*args: str, cwd=ROOT, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlops.cli", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=120, **kwargs,
    )  # fmt: skip


def test_bare_mlops_prints_usage_and_runs_nothing(tmp_path):
    proc = mlops()
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: mlops") and "run" in proc.stdout
    assert not (tmp_path / "mlops.db").exists()


def test_an_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    plain = mlops("config", "--env", "nope")
    assert plain.returncode == 2
    assert plain.stderr.startswith("error: ") and plain.stderr.endswith("\n")
    assert len(plain.stderr.strip().splitlines()) == 1 and "unknown environment 'nope'" in plain.stderr
    debug = mlops("--debug", "config", "--env", "nope")
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_markup_in_a_message_is_printed_as_is(tmp_path):
    proc = mlops("run", "--definition", str(tmp_path / "[red]x.json"), "--home", str(tmp_path / "h"))
    assert proc.returncode == 2
    assert "[red]x.json: file not found" in proc.stderr


def test_env_policy_flag_then_variable_then_the_declared_default():
    assert '"env": "local"' in mlops("config", "--format", "json").stdout  # pyproject: default-env = "local"
    assert '"env": "dev"' in mlops("config", "--format", "json", env={"MLOPS_ENV": "dev"}).stdout
    assert (
        '"env": "prod"'
        in mlops("config", "--env", "prod", "--format", "json", env={"MLOPS_ENV": "dev"}).stdout
    )


def test_a_closed_pipe_ends_quietly(tmp_path):
    reader = subprocess.Popen(
        [sys.executable, "-m", "mlops.cli", "config", "--reference"], cwd=ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    reader.stdout.readline()
    reader.stdout.close()  # like `| head -1`
    assert reader.wait(timeout=60) == 141
    assert b"Traceback" not in reader.stderr.read()


def test_outside_a_project_the_error_says_how_to_point_at_one(tmp_path):
    proc = mlops("validate", cwd=tmp_path, env={"MLOPS_PROJECT_ROOT": ""})
    assert proc.returncode == 2
    assert "no mlops project at or above" in proc.stderr and "--project DIR" in proc.stderr


def test_without_namespaces_a_run_with_jobs_is_refused_before_it_starts(tmp_path):
    definition = {
        "Version": "2020-12-01",
        "Steps": [
            {
                "Name": "Job",
                "Type": "Processing",
                "Arguments": {
                    "ProcessingResources": {
                        "ClusterConfig": {
                            "InstanceCount": 1,
                            "InstanceType": "ml.m5.large",
                            "VolumeSizeInGB": 1,
                        }
                    },
                    "AppSpecification": {
                        "ImageUri": "python",
                        "ContainerEntrypoint": ["python3", "-c", "pass"],
                    },
                    "RoleArn": "arn:aws:iam::111111111111:role/r",
                },
            }
        ],
    }
    path = tmp_path / "job.json"
    path.write_text(__import__("json").dumps(definition))
    no_bwrap = {"PATH": str(tmp_path / "empty-bin"), "MLOPS_SANDBOX": ""}  # bwrap cannot be found
    proc = mlops("run", "--definition", str(path), "--home", str(tmp_path / "h"), env=no_bwrap)
    assert proc.returncode == 1
    assert (
        proc.stderr.startswith("error: jobs cannot be isolated here") and "MLOPS_SANDBOX=none" in proc.stderr
    )
    listed = mlops("executions", "list", "--format", "json", "--home", str(tmp_path / "h"))
    assert listed.stdout.strip() == "[]"  # nothing was started or recorded
