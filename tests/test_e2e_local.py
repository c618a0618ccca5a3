"""End to end: the compiled model-build definition run by `mlops run` on real parts.

Real SDK-compiled definition, real great-expectations, real 2-process DDP (torchrun over 2 namespaced
hosts). One home for the module: the first run trains; later cases reuse its cache where SageMaker would.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import pytest

from mlops.cli.main import main
from mlops.local.state.home import Home

from .conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("mlops-home")


def run(capsys, *args) -> tuple[int, str]:
    code = main(["run", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def show(capsys, home, execution_id) -> dict:
    assert main(["executions", "show", execution_id, "--home", str(home), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    record["steps"] = {s["name"]: s for s in record["steps"]}
    return record


def latest(home) -> dict:
    return Home.open(home).runs.list(limit=1)[0]


def packages(home) -> list[dict]:
    return Home.open(home).registry.list()


def test_happy_path_registers_one_pending_version_with_metrics(home, capsys):
    code, out = run(capsys, "--home", str(home))
    assert code == 0, out
    assert "Succeeded" in out
    execution = show(capsys, home, latest(home)["id"])
    steps = execution["steps"]
    assert {n: s["status"] for n, s in steps.items()} == {
        "Preprocess": "Succeeded", "ValidateData": "Succeeded", "Train": "Succeeded", "Evaluate": "Succeeded",
        "CheckMetric": "Succeeded", "RegisterModel": "Succeeded", "MetricBelowThreshold": "NotExecuted",
    }  # fmt: skip
    assert steps["Train"]["metrics"]["validation:accuracy"] >= 0.9
    (package,) = packages(home)
    assert package["approval_status"] == "PendingManualApproval"
    assert package["group_name"] == "digits-classifier"
    metrics = json.dumps(package["metrics"])
    accuracy = package["metrics"]["ModelQuality.Statistics"]["Content"]["multiclass_classification_metrics"][
        "accuracy"
    ]["value"]
    assert accuracy >= 0.9, metrics


def test_the_run_writes_its_report_and_its_data_docs_render_offline(home, capsys):
    """The happy run's report in headless Chromium with the network refused: DAG, curves, the three
    great-expectations validations, the version's lineage with this work tree's git commit, and GE's data
    docs, styled and scripted by the vendored copies of the assets they load from CDNs."""
    from tests.browser import offline_browser, share_of

    first = Home.open(home).runs.list()[-1]
    report = home / "executions" / first["id"] / "report.html"
    assert report.is_file(), "mlops run writes the report"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    with offline_browser() as view:
        view.goto(report)
        page = view.page
        assert share_of(view.shot("#dag svg"), (0xD3, 0xF0, 0xD8)) > 0.01  # boxes filled as Succeeded
        assert page.locator('.curve[data-step="Train"] svg').count() == 1
        quality = page.locator("#data-quality tbody tr").all_inner_texts()
        assert len(quality) == 3 and all("passed" in row for row in quality), quality
        lineage = page.locator("#lineage").inner_text()
        assert "digits-classifier/1" in lineage and "PendingManualApproval" in lineage
        assert f"git {commit.stdout.strip()}" in lineage
        assert re.search(r"input data: train\s+s3://\S+\s+sha256 [0-9a-f]{64}", lineage), lineage
        assert view.external == [] and view.failed == [] and view.errors == []

        page.locator("a.data-docs").first.click()
        page.wait_for_load_state("load")
        assert page.url.endswith("/report-data-docs/ValidateData/index.html")
        assert page.evaluate("typeof jQuery === 'function' && typeof jQuery.fn.bootstrapTable === 'function'")
        assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("-apple-system")
        page.locator("a", has_text="digits.train").first.wait_for()  # the index's table, drawn by its JS
        assert view.external == [] and view.failed == [] and view.errors == []


def test_second_run_is_served_from_cache(home, capsys):
    code, out = run(capsys, "--home", str(home))
    assert code == 0, out
    steps = show(capsys, home, latest(home)["id"])["steps"]
    for name in ("Preprocess", "ValidateData", "Train", "Evaluate"):
        assert steps[name]["cache_hit"] is True, name


def test_high_threshold_takes_the_fail_branch_and_registers_nothing(home, capsys):
    before = len(packages(home))
    code, out = run(capsys, "--home", str(home), "--param", "MetricThreshold=0.999")
    assert code == 1
    execution = latest(home)
    assert execution["status"] == "Failed"
    assert execution["failure_reason"].startswith("Model not registered: accuracy 0.9")
    assert execution["failure_reason"].endswith("is below the threshold 0.999")
    assert len(packages(home)) == before


def test_parameter_of_the_wrong_type_is_refused_before_anything_runs(home, capsys):
    before = len(Home.open(home).runs.list(limit=1000))
    code, out = run(capsys, "--home", str(home), "--param", "MetricThreshold=high")
    assert code == 2
    assert "MetricThreshold" in out and "high" in out
    assert len(Home.open(home).runs.list(limit=1000)) == before


def test_corrupted_input_fails_at_the_data_quality_step_with_report_saved(home, capsys, tmp_path):
    from mlops.local.s3store import S3Store
    from steps.preprocess.data import write_digits_csv

    csv = tmp_path / "digits.csv"
    write_digits_csv(csv)
    lines = csv.read_text().splitlines()
    cells = lines[5].split(",")
    cells[3] = "99"  # a pixel out of [0, 16]
    lines[5] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    corrupt = "s3://mlops-local/digits/local/data/corrupt/"
    S3Store(Home.open(home).s3_root).put_file(corrupt + "digits.csv", csv)
    before = len(packages(home))

    code, out = run(capsys, "--home", str(home), "--param", f"InputDataUri={corrupt}")
    assert code == 1
    execution = show(capsys, home, latest(home)["id"])
    gate = execution["steps"]["ValidateData"]
    assert gate["status"] == "Failed"
    assert "data quality failed" in gate["failure_reason"] and "pixel_3" in gate["failure_reason"]
    assert execution["steps"]["Train"]["status"] != "Succeeded"
    reports = list((home / "executions").glob(f"{execution['id']}/ValidateData/**/validation.json"))
    assert reports, "the great-expectations report is kept"
    assert list(reports[0].parent.glob("data_docs/**/index.html"))
    assert len(packages(home)) == before
    # the report names the violated expectation and links the failed job's data docs, made offline
    assert main(["report", execution["id"], "--home", str(home)]) == 0
    written = capsys.readouterr().out
    assert f"report-data-docs{os.sep}ValidateData{os.sep}index.html" in written, written
    html = (home / "executions" / execution["id"] / "report.html").read_text()
    assert "expect_column_values_to_be_between" in html and "pixel_3" in html
    assert re.search(r'class="badge Failed">failed</span>', html)


def test_failed_training_then_resume_reruns_only_failed_and_downstream(home, capsys, tmp_path):
    from mlops.compile.compiler import compile_pipelines
    from tests.project import PROJECT, load_config

    good = compile_pipelines(PROJECT, load_config("local")).definition("model-build")
    broken = copy.deepcopy(good)
    train = next(s for s in broken["Steps"] if s["Name"] == "Train")
    train["Arguments"]["HyperParameters"]["epochs"] = "many"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    code, out = run(capsys, "--home", str(home), "--definition", str(path), "--name", "digits-model-build")
    assert code == 1
    failed = show(capsys, home, latest(home)["id"])
    assert failed["steps"]["Train"]["status"] == "Failed"
    assert "invalid int value: 'many'" in failed["steps"]["Train"]["failure_reason"]
    assert (
        failed["steps"]["Evaluate"]["status"] in ("Pending", "NotExecuted", None)
        or "Evaluate" not in failed["steps"]
    )

    fixed = copy.deepcopy(good)
    next(s for s in fixed["Steps"] if s["Name"] == "Train")["Arguments"]["HyperParameters"]["epochs"] = "6"
    path.write_text(json.dumps(fixed))
    code, out = run(capsys, "--home", str(home), "--definition", str(path), "--resume", failed["id"])
    assert code == 0, out
    resumed = show(capsys, home, failed["id"])
    assert resumed["status"] == "Succeeded"
    # the steps that had succeeded keep their first record; only Train and what follows ran again
    for name in ("Preprocess", "ValidateData"):
        assert resumed["steps"][name]["started_at"] == failed["steps"][name]["started_at"], name
    assert resumed["steps"]["Train"]["cache_hit"] is False
    assert resumed["steps"]["RegisterModel"]["status"] == "Succeeded"


def test_two_concurrent_runs_in_one_home_do_not_interfere(home):
    cmd = [sys.executable, "-m", "mlops.cli", "run", "--home", str(home)]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    runs = Home.open(home).runs.list(limit=2)
    assert len({r["id"] for r in runs}) == 2 and all(r["status"] == "Succeeded" for r in runs)
    versions = [p["version"] for p in packages(home)]
    assert len(versions) == len(set(versions))
