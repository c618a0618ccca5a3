"""What approval starts locally: the project's compiled deploy pipeline, run by the local executor.

Exactly the DAG SageMaker runs (e.g. model -> staging endpoint -> smoke test -> production). Locally every
endpoint update can also be gated: the project's ``plan_deploy`` returns a gate that each new endpoint
version must pass before it takes traffic, so a failing version changes nothing that serves and the
deployment is ``RolledBack`` with the reason. Every deployment is recorded in the home with its execution.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from mlops.errors import MlopsError
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home, now
from mlops.project import DeployPlan, DeployRequest, Project

log = logging.getLogger(__name__)

SUCCEEDED, ROLLED_BACK, FAILED = "Succeeded", "RolledBack", "Failed"
STAGES = ("staging", "production")
PLAN_STEP = "PlanDeploy"  # the project's plan_deploy (e.g. loading smoke-test samples)

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


def deploy_model_package(
    package: dict[str, Any],
    *,
    home: Home,
    project: Project,
    cfg,
    target_stage: str = "production",
    on_progress: Progress | None = None,
) -> DeployRecord:
    """Deploy a registry row (``Home.registry.list()``) to the local staging and production endpoints."""
    if target_stage not in STAGES:
        raise DeployError(f"target stage {target_stage!r}: use one of {', '.join(STAGES)}")
    record = DeployRecord(uuid.uuid4().hex[:12], package["arn"], FAILED, "")
    home.deployments.start(record.id, record.package_arn, target_stage)
    try:
        return _deploy(record, package, home, project, cfg, target_stage, on_progress)
    except BaseException as err:  # never leave a deployment InProgress (Ctrl-C, a bug)
        home.deployments.update(
            record.id, status=FAILED, reason=f"{type(err).__name__}: {err}", ended_at=now()
        )
        raise


class GateRefused(MlopsError):
    """A new endpoint version did not pass the project's gate; the serving version stays."""


def _deploy(
    record: DeployRecord, package: dict[str, Any], home: Home, project: Project, cfg, target_stage: str,
    on_progress,
) -> DeployRecord:  # fmt: skip
    from mlops.compile.compiler import compile_cached
    from mlops.local.options import RunOptions
    from mlops.local.scheduler import run_definition

    notify = on_progress or (lambda step, status, message: None)
    declaration = project.declaration

    def finish(status: str, reason: str) -> DeployRecord:
        record.status, record.reason = status, reason
        home.deployments.update(
            record.id, status=status, reason=reason, ended_at=now(), endpoints=record.endpoints,
            steps=[asdict(s) for s in record.steps],
        )  # fmt: skip
        log.info("deployment %s of %s: %s %s", record.id, record.package_arn, status, reason)
        return record

    if not declaration.deploy_pipeline:
        raise DeployError("the project declares no deploy pipeline (Declaration.deploy_pipeline)")
    store = S3Store(home.s3_root)
    plan = DeployPlan()
    if declaration.plan_deploy:
        notify(PLAN_STEP, "Executing", "")
        try:
            plan = declaration.plan_deploy(DeployRequest(cfg, package, target_stage, home, store))
        except MlopsError as err:
            record.steps.append(DeployStep(PLAN_STEP, FAILED, str(err), now()))
            notify(PLAN_STEP, FAILED, str(err))
            return finish(FAILED, f"{PLAN_STEP}: {err}")
        notify(PLAN_STEP, SUCCEEDED, ", ".join(f"{k}={v}" for k, v in sorted(plan.parameters.items())))

    compiled = compile_cached(project, cfg)
    for bundle in compiled.bundles:
        store.put_tree(bundle.s3_uri, bundle.source)

    reports: dict[str, dict[str, Any]] = {}

    def gate(endpoint: str, url: str) -> None:
        result = plan.gate(endpoint, url)
        if result.report is not None:
            reports[endpoint] = result.report
        if not result.passed:
            raise GateRefused(result.reason or "the deploy gate refused this version")

    def on_event(event) -> None:
        if event.kind in ("step-started", "step-finished") and event.step:
            notify(event.step, str(event.status or ""), event.message or "")

    key = declaration.deploy_pipeline
    options = RunOptions(
        params={"ModelPackageArn": package["arn"], **plan.parameters},
        endpoint_ports=declaration.endpoint_ports(cfg),
        endpoint_gate=gate if plan.gate else None,
        pipeline_name=compiled.pipeline_names[key],
        max_parallel=cfg.local.max_parallel_steps,
    )
    execution = run_definition(compiled.definition(key), home=home, options=options, on_event=on_event)
    record.execution_id = execution.id
    for step in execution.steps.values():
        endpoint = (step.properties or {}).get("EndpointName")
        record.steps.append(
            DeployStep(step.name, str(step.status), (step.failure_reason or "").strip(), step.started_at or "",
                       step.duration_s or 0.0, reports.get(endpoint) if endpoint else None)
        )  # fmt: skip
        if step.status == SUCCEEDED and endpoint:
            record.endpoints[endpoint] = step.properties.get("Url")
    if execution.status == SUCCEEDED:
        version = f"{package['group_name']}/{package['version']}"
        return finish(SUCCEEDED, f"{version} serves on {', '.join(record.endpoints)}")
    failed = next((s for s in execution.steps.values() if s.status == FAILED), None)
    reason = (execution.failure_reason or str(execution.status)).strip().splitlines()[-1]
    if failed is not None and failed.type == "Endpoint" and "RolledBack" in (failed.failure_reason or ""):
        return finish(ROLLED_BACK, reason)
    return finish(FAILED, reason)
