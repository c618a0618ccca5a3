"""A finished local execution, logged to an MLflow tracking server with the MLflow client.

One run per execution (tags ``mlops.execution_id``, ``mlops.pipeline_name``, ``mlops.status``; the pipeline
parameters as params), a nested run per Training and Processing step that ran (its metric history as the
home recorded it, every captured value at its epoch, or its n-th capture, and time; hyperparameters and
instances as params; the numbers of its property-file reports, such as the evaluation report, as metrics and
the reports as artifacts), and on the execution's run the model package versions it registered: their
metrics and, with ``log_model``, the version's ``model.tar.gz`` from the local store.

Idempotent per execution: the execution's run carries a fingerprint of what was logged (statuses and end
times of the execution and its steps, the versions registered). Logging an unchanged execution again returns
the existing run; one that changed since (``mlops run --resume``) replaces its runs (the old ones deleted).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import re
import tempfile
from collections.abc import Iterable, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home
from mlops.local.state.runs import _host_order

log = logging.getLogger(__name__)

# Tags of the runs this module writes.
EXECUTION = "mlops.execution_id"
PIPELINE = "mlops.pipeline_name"
STATUS = "mlops.status"
STEP = "mlops.step"
FINGERPRINT = "mlops.fingerprint"
COMPLETE = "mlops.logged"  # set last: a run without it was cut short and is replaced
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

TRACKED_STEP_TYPES = ("Training", "Processing")
_RUN_STATUS = {"Succeeded": "FINISHED", "Failed": "FAILED", "Stopped": "KILLED"}  # the ended ones
_KEY = re.compile(r"[^\w\-. /:]")  # what MLflow accepts in a metric or param name
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
BATCH = {"metrics": 1000, "params": 100, "tags": 100}  # log_batch's limits per call


class TrackingError(MlopsError):
    """The execution could not be logged to MLflow."""


@dataclass
class LoggedExecution:
    """What :func:`log_execution` left in MLflow."""

    run_id: str
    experiment_id: str
    tracking_uri: str
    step_runs: dict[str, str] = field(default_factory=dict)  # step name -> run id
    reused: bool = False  # the execution was logged already, unchanged: nothing was written

    def url(self) -> str:
        return f"{self.tracking_uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"


def log_execution(
    home: Home,
    execution_id: str,
    *,
    tracking_uri: str,
    experiment: str,
    log_model: bool = True,
) -> LoggedExecution:
    """Log execution ``execution_id`` of ``home`` to the MLflow server at ``tracking_uri``."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise TrackingError("mlflow is not installed (it comes with the 'local' extra)") from None

    with _quiet_plugins():
        return _log_execution(home, execution_id, tracking_uri, experiment, log_model)


def _log_execution(
    home: Home, execution_id: str, tracking_uri: str, experiment: str, log_model: bool
) -> LoggedExecution:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    row = home.runs.get(execution_id)
    if row is None:
        raise TrackingError(f"no execution {execution_id} in {home.root}")
    execution_id = row["id"]
    if row["status"] not in _RUN_STATUS:
        raise TrackingError(f"execution {execution_id} is {row['status']}: it is logged once it has ended")
    steps = home.runs.steps(execution_id)
    packages = [p for p in home.registry.list() if p.get("execution_id") == execution_id]
    fingerprint = _fingerprint(row, steps, packages, log_model)

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found is not None else client.create_experiment(experiment)
    if found is not None and found.lifecycle_stage == "deleted":
        client.restore_experiment(experiment_id)
    earlier = client.search_runs(
        [experiment_id], filter_string=f"tags.`{EXECUTION}` = '{_quoted(execution_id)}'",
        run_view_type=ViewType.ACTIVE_ONLY, max_results=1000,
    )  # fmt: skip
    for run in earlier:
        tags = run.data.tags
        if PARENT not in tags and tags.get(FINGERPRINT) == fingerprint and tags.get(COMPLETE) == "true":
            children = {
                r.data.tags.get(STEP): r.info.run_id for r in earlier if tags_parent(r) == run.info.run_id
            }
            return LoggedExecution(run.info.run_id, experiment_id, tracking_uri, children, reused=True)
    for run in earlier:  # changed since, or cut short: replaced
        client.delete_run(run.info.run_id)

    writer = _Writer(client)
    store = S3Store(home.s3_root)
    tags = {
        EXECUTION: execution_id, PIPELINE: row["pipeline_name"], STATUS: row["status"],
        FINGERPRINT: fingerprint, "mlops.home": str(home.root),
    }  # fmt: skip
    if row["failure_reason"]:
        tags["mlops.failure_reason"] = _cut(row["failure_reason"], MAX_TAG_VALUE)
    run_id = client.create_run(
        experiment_id, start_time=_ms(row["started_at"]), run_name=execution_id, tags=tags
    ).info.run_id
    writer.params(run_id, row["parameters"] or {})
    with tempfile.TemporaryDirectory(prefix="mlops-mlflow-") as tmp:
        definition = Path(tmp) / "definition.json"
        definition.write_text(row["definition"])
        client.log_artifact(run_id, str(definition), "pipeline")
        logged = LoggedExecution(run_id, experiment_id, tracking_uri)
        for step in steps:
            if step["type"] in TRACKED_STEP_TYPES and step.get("started_at"):
                logged.step_runs[step["name"]] = _log_step(
                    client, writer, home, store, experiment_id, run_id, execution_id, step, Path(tmp)
                )
        for package in packages:
            _log_package(client, writer, store, run_id, package, log_model, Path(tmp))
    client.set_tag(run_id, COMPLETE, "true")
    _terminated(client, run_id, row["status"], row["ended_at"])
    return logged


@contextmanager
def _quiet_plugins():
    """sagemaker-mlflow (installed with the SageMaker SDK) adds a request-header provider that parses every
    tracking URI as a SageMaker ARN and warns, on each request, when it is not one: quiet while we log."""
    registry = logging.getLogger("mlflow.tracking.request_header.registry")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        yield
    finally:
        registry.setLevel(level)


def _terminated(client, run_id: str, status: str, ended_at: str | None) -> None:
    """``set_terminated``, without the "View run at" lines the client writes to stdout (the CLI prints the
    execution run's URL once)."""
    with redirect_stdout(io.StringIO()):
        client.set_terminated(
            run_id, status=_RUN_STATUS.get(status, "FINISHED"), end_time=_ms(ended_at) if ended_at else None
        )


def tags_parent(run) -> str | None:
    return run.data.tags.get(PARENT)


def _log_step(client, writer, home, store, experiment_id, parent_id, execution_id, step, tmp: Path) -> str:
    props = step.get("properties") or {}
    tags = {
        PARENT: parent_id, EXECUTION: execution_id, STEP: step["name"], STATUS: step["status"],
        "mlops.step_type": step["type"], "mlops.cache_hit": str(bool(step.get("cache_hit"))).lower(),
    }  # fmt: skip
    job = props.get("TrainingJobName") or props.get("ProcessingJobName")
    if job:
        tags["mlops.job_name"] = job
    if step.get("failure_reason"):
        tags["mlops.failure_reason"] = _cut(step["failure_reason"], MAX_TAG_VALUE)
    run_id = client.create_run(
        experiment_id, start_time=_ms(step["started_at"]), run_name=step["name"], tags=tags
    ).info.run_id
    writer.params(run_id, _step_params(props))
    history = home.runs.metric_history(execution_id, step["name"])
    writer.metrics(run_id, _history_metrics(history))
    hosts = sorted({p["host"] for p in history}, key=_host_order)
    if hosts:
        client.set_tag(run_id, "mlops.hosts", ",".join(hosts))
    ended = _ms(step["ended_at"]) if step.get("ended_at") else _ms(step["started_at"])
    for name, uri in (props.get("PropertyFiles") or {}).items():
        report = _read_json(store, uri)
        if report is None:
            continue
        writer.metrics(run_id, [(key, value, ended, 0) for key, value in report_metrics(report).items()])
        path = tmp / step["name"] / f"{_key(name)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
        client.log_artifact(run_id, str(path), "reports")
    _terminated(client, run_id, step["status"], step.get("ended_at") or step["started_at"])
    return run_id


def _log_package(client, writer, store, run_id, package, log_model: bool, tmp: Path) -> None:
    """A registered version on the execution's run: its tags, its metrics files' numbers, its artifact."""
    client.set_tag(run_id, "mlops.model_package_arn", package["arn"])
    client.set_tag(run_id, "mlops.model_package_version", str(package["version"]))
    client.set_tag(run_id, "mlops.model_package_approval_status", package["approval_status"])
    stamp = _ms(package["created_at"])
    for where, entry in (package.get("metrics") or {}).items():
        content = entry.get("Content") if isinstance(entry, Mapping) else None
        if isinstance(content, Mapping):
            writer.metrics(run_id, [(k, v, stamp, 0) for k, v in report_metrics(content).items()])
            path = tmp / "model_metrics" / f"{_key(where)}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(content, indent=2))
            client.log_artifact(run_id, str(path), "model/metrics")
    uri = package.get("model_data_url")
    if log_model and isinstance(uri, str) and uri.startswith("s3://"):
        try:
            path = store.path(uri)
        except MlopsError as err:
            log.warning("model artifact %s not logged: %s", uri, err)
            return
        if path.is_file():
            client.log_artifact(run_id, str(path), "model")
        else:
            log.warning("model artifact %s not logged: not in the local store", uri)


def report_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a JSON report: SageMaker's model-quality shape (``{<kind>_metrics: {name: {value}}}``)
    by metric name, ``{name: {value}}`` entries and top-level numbers by their key. Everything else (such as
    a confusion matrix) stays in the report, which is logged as an artifact."""
    found: dict[str, float] = {}

    def number(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool)

    for key, value in report.items():
        if number(value):
            found[_key(key)] = float(value)
        elif isinstance(value, Mapping):
            if number(value.get("value")):
                found[_key(key)] = float(value["value"])
                continue
            for name, entry in value.items():
                if isinstance(entry, Mapping) and number(entry.get("value")):
                    found[_key(name) if key.endswith("_metrics") else _key(f"{key}.{name}")] = float(
                        entry["value"]
                    )
    return found  # fmt: skip


def _step_params(props: Mapping[str, Any]) -> dict[str, str]:
    params: dict[str, str] = {}
    for key, value in (props.get("HyperParameters") or {}).items():
        params[key] = _unquoted(value)
    resources = (
        props.get("ResourceConfig") or (props.get("ProcessingResources") or {}).get("ClusterConfig") or {}
    )
    for key, name in (("InstanceType", "instance_type"), ("InstanceCount", "instance_count")):
        if key in resources and name not in params:
            params[name] = str(resources[key])
    return params  # fmt: skip


def _history_metrics(history: Iterable[Mapping[str, Any]]) -> list[tuple[str, float, int, int]]:
    """``(key, value, timestamp ms, step)``: step is the point's epoch, else its n-th capture (seq). The first
    host's values are the metric's own; another host's go under ``<name>/<host>``."""
    points = list(history)
    first = min((p["host"] for p in points), key=_host_order, default=None)
    return [
        (
            _key(p["name"] if p["host"] == first else f"{p['name']}/{p['host']}"),
            math.nan if p["value"] is None else float(p["value"]),
            _ms(p["timestamp"]),
            int(p["epoch"] if p["epoch"] is not None else p["seq"]),
        )
        for p in points
    ]


class _Writer:
    """``log_batch`` in chunks MLflow accepts."""

    def __init__(self, client):
        self.client = client

    def params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_key(k)[:250], _cut(_text(v), MAX_PARAM_VALUE)) for k, v in sorted(params.items())]
        for i in range(0, len(items), BATCH["params"]):
            self.client.log_batch(run_id, params=items[i : i + BATCH["params"]])

    def metrics(self, run_id: str, metrics: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        items = [Metric(key[:250], value, stamp, step) for key, value, stamp, step in metrics]
        for i in range(0, len(items), BATCH["metrics"]):
            self.client.log_batch(run_id, metrics=items[i : i + BATCH["metrics"]])


def _fingerprint(row, steps, packages, log_model: bool) -> str:
    what = {
        "status": row["status"], "ended_at": row["ended_at"], "log_model": log_model,
        "steps": [(s["name"], s["status"], s["ended_at"]) for s in steps],
        "packages": [(p["arn"], p["approval_status"]) for p in packages],
    }  # fmt: skip
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _read_json(store: S3Store, uri: str) -> Any:
    try:
        return json.loads(store.path(uri).read_text())
    except (OSError, ValueError, MlopsError) as err:
        log.warning("report %s not logged: %s", uri, err)
        return None


def _ms(stamp: str) -> int:
    return int(datetime.fromisoformat(stamp).timestamp() * 1000)


def _key(name: str) -> str:
    return _KEY.sub("_", str(name))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _unquoted(value: Any) -> str:
    """The SDK JSON-encodes string hyperparameters (``'"net"'``): the param is the string itself."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, str) else value
    return _text(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
