"""``mlops report`` on a real run, opened in a real headless Chromium with every network request refused.

The run: a two-host DDP training job (real torch.distributed) printing metrics each epoch, an evaluation
job that writes a property file, and a job that fails with a Python error, so the report has a DAG in three
states, curves on two hosts, an evaluation table and a failure with its first real error line. The
project's own pipeline (real great-expectations data docs) is reported in tests/test_e2e_local.py.
"""

from __future__ import annotations

import json
import re

import pytest

from mlops.cli.main import main
from mlops.local.runtime import sandbox
from mlops.local.s3store import S3Store
from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home
from tests.browser import offline_browser, share_of
from tests.local.test_executor import processing
from tests.local.test_metric_history import DDP_EPOCHS, EPOCHS, definition, train_step

EVALUATION = {
    "regression_metrics": {"mse": {"value": 0.25, "standard_deviation": 0.01}},
    "confusion": {"a": {"a": 5, "b": 1}, "b": {"a": 0, "b": 7}},
}
EVALUATE = (
    "import os; os.makedirs('/opt/ml/processing/report', exist_ok=True); "
    "open('/opt/ml/processing/report/evaluation.json', 'w').write(os.environ['EVALUATION'])"
)
BROKEN = "import sys; print('loading the batch', flush=True); raise ValueError('column pixel_3 is missing')"
# Graphviz fills (mlops.definition.graph.STATUS_STYLES) and matplotlib's first two line colours
SUCCEEDED_FILL, FAILED_FILL, NOT_RUN_FILL = (0xD3, 0xF0, 0xD8), (0xF8, 0xD4, 0xD4), (0xEE, 0xEE, 0xEE)
LINE_HOST_1, LINE_HOST_2 = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    if not sandbox.bwrap_works():
        pytest.skip("bwrap cannot create namespaces on this machine (algo-1 must resolve)")
    root = tmp_path_factory.mktemp("report")
    home = Home.open(root / "home")
    evaluate = processing(
        "Evaluate",
        EVALUATE,
        outputs=["report"],
        env={"EVALUATION": json.dumps(EVALUATION)},
        DependsOn=["Train"],
    )
    evaluate["PropertyFiles"] = [
        {"PropertyFileName": "EvaluationReport", "OutputName": "report", "FilePath": "evaluation.json"}
    ]
    broken = processing("Broken", BROKEN, DependsOn=["Evaluate"])
    after = processing("Never", "print('unreachable')", DependsOn=["Broken"])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_SANDBOX", "bwrap")
        record = run_definition(
            definition(train_step(S3Store(home.s3_root), DDP_EPOCHS), evaluate, broken, after), home=home
        )
    assert record.status == "Failed" and record.steps["Evaluate"].status == "Succeeded", record.failure_reason
    return root, home, record


def write(capsys, home: Home, *args: str) -> str:
    assert main(["report", "latest", "--home", str(home.root), *args]) == 0
    out = capsys.readouterr().out
    return re.search(r"report: (\S+)", out).group(1)


def test_the_report_renders_offline_with_the_dag_and_curves_drawn(reported, capsys):
    _, home, record = reported
    path = write(capsys, home)
    assert path == str(home.execution_dir(record.id) / "report.html")
    with offline_browser() as view:
        view.goto(path)
        assert view.external == [] and view.failed == [] and view.errors == []
        page = view.page
        assert record.id in page.title() and "Failed" in page.title()
        # the DAG: one box per step, coloured by status, with its duration; boxes link to the step rows
        dag = view.shot("#dag svg")
        assert dag.width > 100 and dag.height > 300  # four boxes in a column
        for fill in (SUCCEEDED_FILL, FAILED_FILL, NOT_RUN_FILL):
            assert share_of(dag, fill) > 0.005, fill
        titles = page.locator("#dag svg g.node > title").all_text_contents()
        assert sorted(titles) == ["Broken", "Evaluate", "Never", "Train"]
        assert page.locator('#dag svg a[*|href="#step-Train"]').count() == 1
        train_label = " ".join(
            page.locator("#dag svg g.node", has_text="Train").first.locator("text").all_text_contents()
        )
        assert re.search(r"Succeeded \d+\.\ds", train_label), train_label
        # the curves: a panel per metric, a line per host, in both hosts' colours
        curve = page.locator('.curve[data-step="Train"]')
        assert curve.locator("svg").count() == 1
        panels = curve.locator("svg text", has_text=re.compile(r"^(train:loss|validation:loss|local:loss)$"))
        assert panels.count() == 3
        picture = view.shot('.curve[data-step="Train"] svg')
        assert share_of(picture, LINE_HOST_1, 30) > 0.0005 and share_of(picture, LINE_HOST_2, 30) > 0.0005
        rows = curve.locator("tbody tr").all_inner_texts()
        assert any(r.startswith("local:loss") and f"{2 * EPOCHS}" in r for r in rows), rows  # points: 2 hosts


def test_the_step_table_names_the_failure_and_links_the_logs(reported, capsys):
    _, home, record = reported
    path = write(capsys, home)
    with offline_browser() as view:
        view.goto(path)
        row = view.page.locator("#step-Broken")
        assert "Failed" in row.inner_text()
        assert "ValueError: column pixel_3 is missing" in row.inner_text()
        assert "not run" in view.page.locator("#step-Never").inner_text()  # the failure stopped the run first
        log = row.locator("a").first
        log.click()  # a relative link to the job's own log file, which opens
        view.page.wait_for_load_state("load")
        assert "loading the batch" in view.page.inner_text("body")
        assert view.failed == [] and view.external == []
    assert "column pixel_3 is missing" in home.runs.get(record.id)["failure_reason"]


def test_the_evaluation_report_and_lineage_are_tabled(reported, capsys):
    _, home, record = reported
    path = write(capsys, home)
    with offline_browser() as view:
        view.goto(path)
        evaluation = view.page.locator("#evaluation").inner_text()
        assert re.search(r"regression_metrics\.mse\s+0\.25", evaluation), evaluation
        assert re.search(r"regression_metrics\.mse \(std\)\s+0\.01", evaluation), evaluation
        matrix = view.page.locator("#evaluation table.matrix")
        assert matrix.locator("td.diag").all_inner_texts() == ["5", "7"]
        lineage = view.page.locator("#lineage").inner_text()
        assert "registered no model version" in lineage
    assert record.steps["Train"].status == "Succeeded"


def test_a_report_written_elsewhere_and_bad_ids(reported, capsys, tmp_path):
    _, home, _ = reported
    dest = tmp_path / "out" / "run.html"
    assert write(capsys, home, "--out", str(dest)) == str(dest)
    html = dest.read_text()
    assert "<script" not in html  # nothing runs: the page is its HTML, CSS and inline SVG
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?https?:|@import""", html)
    assert {"#dag", "#steps", "#curves", "#evaluation", "#lineage"} <= {
        f"#{i}" for i in re.findall(r'id="([^"]+)"', html)
    }
    code = main(["report", "nope", "--home", str(home.root)])
    assert code == 1 and "no execution 'nope'" in capsys.readouterr().err
