"""The local model-deploy run: the model-deploy DAG's steps on local endpoints, one after the other.

model from package (unpack ``model.tar.gz`` from the store) -> staging endpoint create-or-update -> smoke test
(test split of the execution that produced the package) -> production by blue/green with the same smoke test
as the gate. A failed smoke test changes nothing that serves: staging and production keep their previous
version and the deployment is ``RolledBack`` with the reason. Every deployment is recorded in the home.
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.approval.local import test_split_uri
from pipelines.errors import MlopsError
from pipelines.local.home import Home, now
from pipelines.local.s3store import S3Store, S3StoreError
from pipelines.serving import supervisor
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
    notify = on_progress or (lambda step, status, message: None)

    def run_step(name: str, action: Callable[[DeployStep], str]) -> DeployStep:
        step = DeployStep(name, "Executing", started_at=now())
        notify(name, "Executing", "")
        started = time.monotonic()
        try:
            step.message = action(step) or ""
            step.status = SUCCEEDED
        except (MlopsError, SmokeTestFailed, OSError) as err:
            step.status, step.message = FAILED, str(err)
        step.duration_s = round(time.monotonic() - started, 3)
        record.steps.append(step)
        home.update_deployment(record.id, steps=[asdict(s) for s in record.steps])
        notify(name, step.status, step.message)
        return step

    def finish(status: str, reason: str) -> DeployRecord:
        record.status, record.reason = status, reason
        home.update_deployment(
            record.id, status=status, reason=reason, ended_at=now(), endpoints=record.endpoints,
            steps=[asdict(s) for s in record.steps],
        )  # fmt: skip
        log.info("deployment %s of %s: %s %s", record.id, record.package_arn, status, reason)
        return record

    model_dir: Path | None = None
    samples: tuple[list, list] | None = None

    def model_from_package(step: DeployStep) -> str:
        nonlocal model_dir
        model_dir = unpack_model(package, home)
        return str(model_dir)

    def load_test_samples(step: DeployStep) -> str:
        nonlocal samples
        uri = samples_uri(package, home, cfg)
        try:
            samples = load_samples(str(S3Store(home.s3_root).path(uri)), cfg.endpoints.smoke_test.samples)
        except S3StoreError as err:
            raise DeployError(f"smoke-test samples {uri}: {err}") from err
        return f"{len(samples[0])} rows from {uri}"

    for name, action in (("ModelFromPackage", model_from_package), ("SmokeTestSamples", load_test_samples)):
        step = run_step(name, action)
        if step.status == FAILED:
            return finish(FAILED, f"{name}: {step.message}")
    assert model_dir is not None and samples is not None
    version = f"{package['group_name']}-{package['version']}"

    reports: list[dict[str, Any]] = []

    def gate(url: str) -> None:
        report = smoke_test(url, samples, cfg)
        reports.append(report)
        if not report["passed"]:
            raise SmokeTestFailed(report["reason"].removeprefix("smoke test failed: "))

    for stage in STAGES[: STAGES.index(target_stage) + 1]:
        settings = getattr(cfg.endpoints, stage)
        name = endpoint_name(cfg, stage)
        outcome: dict[str, Any] = {}

        def blue_green(step: DeployStep, name=name, settings=settings, outcome=outcome) -> str:
            reports.clear()
            result = supervisor.deploy_blue_green(
                name, model_dir, gate, port=settings.local_port, home=home.root,
                workers=settings.instance_count, version=version,
            )  # fmt: skip
            outcome["result"] = result
            step.report = reports[-1] if reports else None
            if result.status != supervisor.SUCCEEDED:
                raise DeployError(result.reason)
            return f"{name} serves {version} at {result.endpoint.url}"

        step = run_step(f"{stage.capitalize()}Endpoint", blue_green)
        if step.status == FAILED:
            if "result" not in outcome:  # the supervisor refused before starting anything
                return finish(FAILED, f"{stage}: {step.message} (endpoint unchanged)")
            kept = (
                "previous version keeps serving" if outcome["result"].endpoint.active else "nothing deployed"
            )
            return finish(ROLLED_BACK, f"{stage}: {step.message} ({kept})")
        record.endpoints[name] = outcome["result"].endpoint.url
    return finish(SUCCEEDED, f"{version} serves on {', '.join(record.endpoints)}")


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


def unpack_model(package: dict[str, Any], home: Home) -> Path:
    """``model.tar.gz`` of the package unpacked once into ``<home>/models/<group>/<version>/``."""
    dest = home.root / "models" / package["group_name"] / str(package["version"])
    if (dest / "code" / "inference.py").is_file():
        return dest
    url = package.get("model_data_url")
    if not url:
        raise DeployError(f"model package {package['arn']}: no ModelDataUrl")
    try:
        archive = S3Store(home.s3_root).path(url)
    except S3StoreError as err:
        raise DeployError(f"model package {package['arn']}: {err}") from err
    if not archive.is_file():
        raise DeployError(f"model package {package['arn']}: {url} is not in the local store ({archive})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(tmp, filter="data")
        if not (tmp / "code" / "inference.py").is_file():
            raise DeployError(f"model package {package['arn']}: {url} has no code/inference.py")
        if dest.exists():  # an earlier, incomplete unpack
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except (tarfile.TarError, EOFError) as err:
        raise DeployError(
            f"model package {package['arn']}: {url} is not a readable tar.gz ({str(err).splitlines()[0]})"
        ) from err
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest
