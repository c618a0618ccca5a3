"""What approval starts locally: the compiled model-deploy definition, run by the local executor.

CreateModel from the package -> staging endpoint -> SmokeTest job -> production (alarms, blue/green
endpoint, autoscaling), exactly the DAG SageMaker runs. Locally every endpoint update is also gated: the
new version answers the smoke test (test split of the execution that produced the package) before it
takes traffic, so a failing version changes nothing that serves and the deployment is ``RolledBack`` with
the reason. Every deployment is recorded in the home with its execution.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops.errors import MlopsError
from mlops.local.s3store import S3Store, S3StoreError
from mlops.local.state.home import Home, now
from mlops.registry.local import test_split_uri
from mlops.serving import supervisor
from steps.smoke_test.code.smoke_test import SmokeTestFailed, load_samples, run_smoke_test

log = logging.getLogger(__name__)

SUCCEEDED, ROLLED_BACK, FAILED = "Succeeded", "RolledBack", "Failed"
STAGES = ("staging", "production")

# on_progress(step, status, message): status is Executing, Succeeded, Failed or Skipped
Progress = Callable[[str, str, str], None]


class DeployError(MlopsError):
    """A deploy step could not run (missing model data, no samples, a broken archive)."""


@dataclass
class DeployStep:
    name: str
    status: str
    message: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    report: dict[str, Any] | None = None


@dataclass
class DeployRecord:
    id: str
    package_arn: str
    status: str  # Succeeded | RolledBack | Failed
    reason: str
    execution_id: str = ""  # the local model-deploy execution (mlops executions show ID)
    endpoints: dict[str, str] = field(default_factory=dict)  # endpoint name -> URL, where the version serves
    steps: list[DeployStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def endpoint_name(cfg, stage: str) -> str:
    """The same names the compiled model-deploy pipeline gives its endpoints."""
    return f"{cfg.project.name}-{stage}"


def deploy_model_package(
    package: dict[str, Any],
    *,
    home: Home,
    cfg,
    target_stage: str = "production",
    on_progress: Progress | None = None,
) -> DeployRecord:
    """Deploy a registry row (``Home.model_packages()``) to the local staging and production endpoints."""
    if target_stage not in STAGES:
        raise DeployError(f"target stage {target_stage!r}: use one of {', '.join(STAGES)}")
    record = DeployRecord(uuid.uuid4().hex[:12], package["arn"], FAILED, "")
    home.start_deployment(record.id, record.package_arn, target_stage)
    try:
        return _deploy(record, package, home, cfg, target_stage, on_progress)
    except BaseException as err:  # never leave a deployment InProgress (Ctrl-C, a bug)
        home.update_deployment(
            record.id, status=FAILED, reason=f"{type(err).__name__}: {err}", ended_at=now()
        )
        raise


def _deploy(
    record: DeployRecord, package: dict[str, Any], home: Home, cfg, target_stage: str, on_progress
) -> DeployRecord:
    from mlops.compile.compiler import DEPLOY, compile_cached
    from mlops.local.scheduler import run_definition

    notify = on_progress or (lambda step, status, message: None)

    def finish(status: str, reason: str) -> DeployRecord:
        record.status, record.reason = status, reason
        home.update_deployment(
            record.id, status=status, reason=reason, ended_at=now(), endpoints=record.endpoints,
            steps=[asdict(s) for s in record.steps],
        )  # fmt: skip
        log.info("deployment %s of %s: %s %s", record.id, record.package_arn, status, reason)
        return record

    store = S3Store(home.s3_root)
    uri = samples_uri(package, home, cfg)
    notify("SmokeTestSamples", "Executing", "")
    try:
        samples = load_samples(str(store.path(uri)), cfg.endpoints.smoke_test.samples)
    except (S3StoreError, SmokeTestFailed, OSError) as err:
        record.steps.append(DeployStep("SmokeTestSamples", FAILED, str(err), now()))
        notify("SmokeTestSamples", FAILED, str(err))
        return finish(FAILED, f"SmokeTestSamples: smoke-test samples {uri}: {err}")
    notify("SmokeTestSamples", SUCCEEDED, f"{len(samples[0])} rows from {uri}")

    compiled = compile_cached(cfg)
    for bundle in compiled.bundles:
        store.put_tree(bundle.s3_uri, bundle.source)

    reports: dict[str, dict[str, Any]] = {}

    def gate(endpoint: str, url: str) -> None:
        """Each new endpoint version answers the smoke test before it takes any traffic."""
        report = smoke_test(url, samples, cfg)
        reports[endpoint] = report
        if not report["passed"]:
            raise SmokeTestFailed(report["reason"].removeprefix("smoke test failed: "))

    def on_event(event) -> None:
        if event.kind in ("step-started", "step-finished") and event.step:
            notify(event.step, event.status or "", event.message or "")

    execution = run_definition(
        compiled.definition(DEPLOY),
        home=home.root,
        params={"ModelPackageArn": package["arn"], "TargetStage": target_stage, "SmokeTestDataUri": uri},
        endpoint_ports={
            endpoint_name(cfg, stage): getattr(cfg.endpoints, stage).local_port for stage in STAGES
        },
        endpoint_gate=gate,
        on_event=on_event,
        pipeline_name=compiled.pipeline_names[DEPLOY],
        max_parallel=cfg.local.max_parallel_steps,
    )
    record.execution_id = execution.id
    for step in execution.steps.values():
        endpoint = (step.properties or {}).get("EndpointName")
        record.steps.append(
            DeployStep(step.name, step.status, (step.failure_reason or "").strip(), step.started_at or "",
                       step.duration_s or 0.0, reports.get(endpoint) if endpoint else None)
        )  # fmt: skip
        if step.status == SUCCEEDED and endpoint:
            record.endpoints[endpoint] = step.properties.get("Url")
    if execution.status == SUCCEEDED:
        version = f"{package['group_name']}/{package['version']}"
        return finish(SUCCEEDED, f"{version} serves on {', '.join(record.endpoints)}")
    failed = next((s for s in execution.steps.values() if s.status == FAILED), None)
    reason = (execution.failure_reason or execution.status).strip().splitlines()[-1]
    if failed is not None and failed.type == "Endpoint" and "RolledBack" in (failed.failure_reason or ""):
        return finish(ROLLED_BACK, reason)
    return finish(FAILED, reason)


def smoke_test(url: str, samples: tuple[list, list], cfg) -> dict[str, Any]:
    """``run_smoke_test`` (the SmokeTest step's own checks) against a local endpoint URL."""
    settings = cfg.endpoints.smoke_test

    def invoke(body: bytes, content_type: str) -> tuple[int, bytes]:
        result = supervisor.post(url, body, content_type)
        return result.status, result.body

    rows, labels = samples
    return run_smoke_test(invoke, rows, labels, settings.min_accuracy, settings.max_p95_latency_ms)


def samples_uri(package: dict[str, Any], home: Home, cfg) -> str:
    """The test split the producing execution wrote; else its input data; else the configured input."""
    execution_id = package.get("execution_id")
    if execution_id:
        uri = test_split_uri(home, execution_id)
        if uri and S3Store(home.s3_root).list(uri.rstrip("/") + "/"):
            return uri
        execution = home.execution(execution_id)
        uri = ((execution or {}).get("parameters") or {}).get("InputDataUri")
        if uri:
            return uri
    return cfg.data.input_uri
