"""A full disk under the home: the run ends with one line, and the next command records it Failed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.local.conftest import needs_bwrap

MLOPS = str(Path(sys.executable).parent / "mlops")
FILL = "open('/opt/ml/processing/out/big','wb').write(b'x'*(64<<20))"  # 64 MiB onto an 8 MiB disk


def _can_mount() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True)
    return probe.returncode == 0


@needs_bwrap
@pytest.mark.skipif(not _can_mount(), reason="no private mount namespace for a small tmpfs here")
def test_a_full_disk_ends_the_run_in_one_line_and_no_execution_stays_executing(tmp_path):
    definition = {
        "Version": "2020-12-01",
        "Steps": [{"Name": "Fill", "Type": "Processing", "Arguments": {
            "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                      "VolumeSizeInGB": 1}},
            "AppSpecification": {"ImageUri": "python", "ContainerEntrypoint": ["python3", "-c", FILL]},
            "ProcessingOutputConfig": {"Outputs": [{"OutputName": "out", "S3Output": {
                "S3Uri": "s3://b/out", "LocalPath": "/opt/ml/processing/out", "S3UploadMode": "EndOfJob"}}]},
            "RoleArn": "arn:aws:iam::111111111111:role/r"}}],
    }  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(definition))
    home = tmp_path / "home"
    home.mkdir()
    # the tmpfs exists only in this private mount namespace: nothing is left mounted on the host
    script = (
        f"mount -t tmpfs -o size=8m tmpfs {home} && "
        f'{MLOPS} run --definition {tmp_path / "job.json"} --home {home}; echo "run-exit=$?"; '
        f"rm -rf {home}/executions/*/Fill; "  # space again, as after the user frees some
        f"{MLOPS} executions list --home {home} --format json"
    )
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=180)
    out, err = proc.stdout, proc.stderr
    assert "run-exit=1" in out, out + err
    assert "Traceback" not in out + err
    errors = [line for line in (out + err).splitlines() if line.startswith("error:")]
    assert errors == [f"error: local database {home}/mlops.db: database or disk is full"]
    rows = json.loads(out[out.index("[") :])
    assert [r["status"] for r in rows] == ["Failed"]
    assert "ended without recording an outcome" in rows[0]["failure_reason"]
    left = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True)
    assert left.stdout.strip() == ""  # no job process outlived the run
