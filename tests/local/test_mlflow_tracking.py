"""Local executions logged to a real MLflow server (``mlflow server`` over SQLite, started on demand in the
home): the execution's run with its parameters, a nested run per job with its metric history, the
evaluation report's metrics, the registered version's model artifact; logged twice, nothing duplicates."""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import re
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from mlops.local.runtime import sandbox
from mlops.local.s3store import S3Store
from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home
from mlops.local.tracking.mlflow_runs import EXECUTION, PARENT, STEP, log_execution
from mlops.local.tracking.mlflow_server import (
    MlflowServerError,
    ensure_server,
    read_info,
    running,
    stop_server,
)
from tests.local.test_executor import processing
from tests.local.test_training_job import request
from tests.project import ROOT as PROJECT_ROOT

EPOCHS = 4
TRAIN = f"""
import time
for epoch in range(1, {EPOCHS} + 1):
    print(f"epoch={{epoch}} loss={{1 / epoch:.4f}} acc={{0.5 + 0.1 * epoch:.4f}}", flush=True)
    time.sleep(0.02)
open("/opt/ml/model/weights.txt", "w").write("trained")
"""
METRICS = [
    {"Name": "train:loss", "Regex": r"loss=([0-9.]+)"},
    {"Name": "validation:accuracy", "Regex": r"acc=([0-9.]+)"},
]
REPORT = (  # SageMaker's model-quality shape, with a confusion matrix that only the report artifact keeps
    "import json,os;d='/opt/ml/processing/report';os.makedirs(d,exist_ok=True);m=lambda v:{'value':v};"
    "json.dump({'multiclass_classification_metrics':{'accuracy':m(0.93),'weighted_f1':m(0.91),"
    "'confusion_matrix':{'0':{'0':3}}}},open(d+'/evaluation.json','w'))"
)
REPORT_URI = {
    "Std:Join": {
        "On": "/",
        "Values": [
            {"Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri"},
            "evaluation.json",
        ],
    }
}


def pipeline(store: S3Store) -> dict:
    """Train (metric lines per epoch) -> Evaluate (an evaluation report) -> Register (the trained model)."""
    train = {
        "Name": "Train",
        "Type": "Training",
        "Arguments": request(
            store, TRAIN, metrics=METRICS, hps={"epochs": str(EPOCHS), "lr": "0.1", "name": '"net"'}
        ),
    }
    evaluate = processing(
        "Evaluate",
        REPORT,
        outputs=["report"],
        DependsOn=["Train"],
        PropertyFiles=[{"PropertyFileName": "Report", "OutputName": "report", "FilePath": "evaluation.json"}],
    )
    register = {
        "Name": "Register", "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": "digits",
            "ModelApprovalStatus": "PendingManualApproval",
            "InferenceSpecification": {
                "Containers": [{"Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/infer:1",
                                "ModelDataUrl": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}],
                "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"],
            },
            "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json", "S3Uri": REPORT_URI}}},
        },
    }  # fmt: skip
    return {
        "Version": "2020-12-01", "Metadata": {},
        "Parameters": [{"Name": "Seed", "Type": "Integer", "DefaultValue": 7}],
        "Steps": [train, evaluate, register],
    }  # fmt: skip


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A home with one real finished execution, and the home's MLflow server: ``(home, record, uri)``."""
    root = tmp_path_factory.mktemp("mlflow")
    home = Home.open(root / "home")
    progress, started = [], concurrent.futures.ThreadPoolExecutor(1)  # the server starts while the run runs
    server = started.submit(ensure_server, home.root, on_progress=progress.append)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_SANDBOX", sandbox.BWRAP if sandbox.bwrap_works() else sandbox.NONE)
        record = run_definition(pipeline(S3Store(home.s3_root)), home=home, pipeline_name="tiny")
    info = server.result(timeout=120)
    started.shutdown()
    assert record.status == "Succeeded", [(s.name, s.failure_reason) for s in record.steps.values()]
    assert progress == [f"starting the MLflow server on {info.uri} (log: {home.root}/mlflow/server.log) …"]
    yield home, record, info.uri
    stop_server(home.root)


def client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def runs_of(uri: str, experiment: str, execution_id: str):
    c = client(uri)
    exp = c.get_experiment_by_name(experiment)
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`{EXECUTION}` = '{execution_id}'")


def test_the_execution_is_a_run_with_its_parameters_and_each_job_a_nested_run(finished):
    home, record, uri = finished
    logged = log_execution(home, record.id, tracking_uri=uri, experiment="tiny-local")
    c = client(uri)
    run = c.get_run(logged.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"Seed": "7"}
    assert run.data.tags[EXECUTION] == record.id
    assert run.data.tags["mlops.pipeline_name"] == "tiny" and run.data.tags["mlops.status"] == "Succeeded"
    assert set(logged.step_runs) == {"Train", "Evaluate"}  # the jobs; RegisterModel is the run's own
    train = c.get_run(logged.step_runs["Train"])
    assert train.data.tags[PARENT] == logged.run_id and train.data.tags[STEP] == "Train"
    assert train.data.params == {"epochs": "4", "lr": "0.1", "name": "net", "instance_type": "ml.m5.xlarge",
                                 "instance_count": "1"}  # fmt: skip
    # the evaluation report's metrics, on its step's run and (registered with the version) on the execution's
    assert c.get_run(logged.step_runs["Evaluate"]).data.metrics == {"accuracy": 0.93, "weighted_f1": 0.91}
    assert run.data.metrics == {"accuracy": 0.93, "weighted_f1": 0.91}


def test_every_recorded_metric_point_is_in_the_nested_runs_history_by_epoch(finished):
    home, record, uri = finished
    logged = log_execution(home, record.id, tracking_uri=uri, experiment="tiny-local")
    recorded = home.runs.metric_history(record.id, "Train")
    assert len(recorded) == 2 * EPOCHS
    c = client(uri)
    for name in ("train:loss", "validation:accuracy"):
        history = c.get_metric_history(logged.step_runs["Train"], name)
        mine = [p for p in recorded if p["name"] == name]
        assert len(history) == len(mine) == EPOCHS
        assert sorted((m.step, m.value) for m in history) == [(p["epoch"], p["value"]) for p in mine]
    loss = {m.step: m.value for m in c.get_metric_history(logged.step_runs["Train"], "train:loss")}
    assert loss == {1: 1.0, 2: 0.5, 3: 0.3333, 4: 0.25}


def test_the_registered_versions_model_artifact_is_logged(finished, tmp_path):
    home, record, uri = finished
    logged = log_execution(home, record.id, tracking_uri=uri, experiment="tiny-local")
    c = client(uri)
    assert c.get_run(logged.run_id).data.tags["mlops.model_package_arn"].endswith("/digits/1")
    listed = {a.path for a in c.list_artifacts(logged.run_id, "model")}
    assert "model/model.tar.gz" in listed
    local = Path(c.download_artifacts(logged.run_id, "model/model.tar.gz", str(tmp_path)))
    with tarfile.open(fileobj=io.BytesIO(local.read_bytes())) as tar:
        assert tar.extractfile("weights.txt").read() == b"trained"
    reports = {a.path for a in c.list_artifacts(logged.step_runs["Evaluate"], "reports")}
    assert reports == {"reports/Report.json"}
    report = json.loads(
        Path(
            c.download_artifacts(logged.step_runs["Evaluate"], "reports/Report.json", str(tmp_path))
        ).read_text()
    )
    assert report["multiclass_classification_metrics"]["confusion_matrix"] == {"0": {"0": 3}}


def test_logging_twice_duplicates_nothing_and_a_resumed_execution_replaces_its_runs(finished):
    home, record, uri = finished
    first = log_execution(home, record.id, tracking_uri=uri, experiment="tiny-twice")
    again = log_execution(home, record.id, tracking_uri=uri, experiment="tiny-twice")
    assert again.reused and (again.run_id, again.step_runs) == (first.run_id, first.step_runs)
    runs = runs_of(uri, "tiny-twice", record.id)
    assert len(runs) == 3  # the execution and its two jobs, once
    history = client(uri).get_metric_history(first.step_runs["Train"], "train:loss")
    assert len(history) == EPOCHS
    # the execution changed since (a resume ends it again): its runs are replaced, not added to
    with home.db() as con:
        con.execute(
            "UPDATE executions SET ended_at = ? WHERE id = ?", ("2030-01-01T00:00:00+00:00", record.id)
        )
    replaced = log_execution(home, record.id, tracking_uri=uri, experiment="tiny-twice")
    assert not replaced.reused and replaced.run_id != first.run_id
    assert len(runs_of(uri, "tiny-twice", record.id)) == 3


def test_the_server_is_reused_while_it_answers_and_recorded_for_the_user(finished):
    home, _, uri = finished
    info = read_info(home.root)
    assert info.uri == uri and running(home.root) == info
    started = time.monotonic()
    assert ensure_server(home.root) == info  # no second server
    assert time.monotonic() - started < 5
    assert Path(info.backend_store_uri.removeprefix("sqlite:///")) == home.root / "mlflow" / "mlflow.db"


# ------------------------------------------------------------------------------------------ through the CLI

SANDBOX = {"MLOPS_SANDBOX": sandbox.BWRAP if sandbox.bwrap_works() else sandbox.NONE}
# the run, then whether anything imported mlflow: the CLI in a fresh interpreter
RUN_AND_REPORT = (
    "import sys; from mlops.cli.main import main; rc = main(sys.argv[1:]);"
    "print('mlflow imported' if 'mlflow' in sys.modules else 'mlflow not imported'); sys.exit(rc)"
)


@pytest.fixture(scope="module")
def evaluate_only(tmp_path_factory) -> Path:
    """One quick job with an evaluation report, as a definition file for ``mlops run --definition``."""
    path = tmp_path_factory.mktemp("definition") / "evaluate.json"
    step = processing(
        "Evaluate", REPORT, outputs=["report"],
        PropertyFiles=[{"PropertyFileName": "Report", "OutputName": "report", "FilePath": "evaluation.json"}],
    )  # fmt: skip
    path.write_text(json.dumps({"Version": "2020-12-01", "Metadata": {}, "Parameters": [], "Steps": [step]}))
    return path


def cli(*args, env=None, code=None) -> subprocess.CompletedProcess:
    command = (
        [sys.executable, "-c", code, *map(str, args)]
        if code
        else [sys.executable, "-m", "mlops.cli", *map(str, args)]
    )
    return subprocess.run(
        command, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=180,
        env={k: v for k, v in {**os.environ, **SANDBOX, **(env or {})}.items() if v is not None},
    )  # fmt: skip


def test_disabled_a_run_touches_no_mlflow(evaluate_only, tmp_path):
    home = tmp_path / "home"
    done = cli("run", "--definition", evaluate_only, "--home", home, code=RUN_AND_REPORT,
               env={"MLFLOW_TRACKING_URI": None, "MLOPS__TRACKING__MLFLOW__ENABLED": None})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "mlflow not imported"
    assert "MLflow" not in done.stdout + done.stderr
    assert not (home / "mlflow").exists()


def test_enabled_mlops_run_logs_its_execution_and_mlops_mlflow_log_finds_it_logged(
    finished, evaluate_only, tmp_path
):
    _, _, uri = finished  # $MLFLOW_TRACKING_URI names a running server: no other is started
    home = tmp_path / "home"
    env = {"MLOPS__TRACKING__MLFLOW__ENABLED": "true", "MLFLOW_TRACKING_URI": uri}
    done = cli("run", "--definition", evaluate_only, "--home", home, env=env)
    assert done.returncode == 0, done.stderr
    execution_id = Home.open(home).runs.list(limit=1)[0]["id"]
    # one line names the execution's run: no client chatter (run URLs, plugin warnings) around it
    assert [line for line in done.stdout.splitlines() if uri in line] == [
        line for line in done.stdout.splitlines() if line.startswith(f"MLflow: {uri}/#/experiments/")
    ]
    assert len([line for line in done.stdout.splitlines() if uri in line]) == 1
    assert "WARNING" not in done.stderr
    (run,) = [r for r in runs_of(uri, "digits-local", execution_id) if PARENT not in r.data.tags]
    assert run.data.tags["mlops.pipeline_name"] == "evaluate" and run.info.status == "FINISHED"
    assert not (home / "mlflow").exists()
    again = cli("mlflow", "log", "latest", "--home", home, env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"already logged {execution_id} to MLflow: {uri}")
    assert len(runs_of(uri, "digits-local", execution_id)) == 2  # the execution and its job, once


def test_a_server_that_does_not_answer_is_one_warning_and_the_run_still_succeeds(evaluate_only, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MLOPS__TRACKING__MLFLOW__ENABLED": "true", "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
    done = cli("run", "--definition", evaluate_only, "--home", tmp_path / "home", env=env)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: execution ")
    assert f"http://127.0.0.1:{port} does not answer /health" in warnings[0]
    assert "Succeeded" in done.stdout


def test_mlflow_url_no_start_without_a_server_exits_1(tmp_path):
    done = cli("mlflow", "url", "--no-start", "--home", tmp_path / "home")
    assert done.returncode == 1 and "no MLflow server is running" in done.stderr
    assert not (tmp_path / "home" / "mlflow" / "server.json").exists()


def test_a_server_that_does_not_come_up_in_time_is_stopped_and_one_line_names_its_log(tmp_path):
    with pytest.raises(MlflowServerError) as err:
        ensure_server(tmp_path, timeout_s=0.5)
    log = tmp_path / "mlflow" / "server.log"
    assert re.fullmatch(
        rf"the MLflow server did not answer on http://127\.0\.0\.1:\d+ within 0\.5 s; see {re.escape(str(log))}",
        str(err.value),
    )
    assert log.is_file() and read_info(tmp_path) is None  # nothing recorded, nothing left running
    started = log.read_text().splitlines()[0]
    port = re.search(r"--port (\d+)", started).group(1)
    assert not [p for p in Path("/proc").glob("[0-9]*") if _cmdline(p).endswith(f"--port {port} --workers 1")]


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""
