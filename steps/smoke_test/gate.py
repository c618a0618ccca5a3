"""What the local deploy asks of each new endpoint version before it takes traffic: the smoke test.

The same checks as the SmokeTest step's container code (``code/smoke_test.py``), on rows of the test split
that the producing execution wrote (else its input data, else the configured input).
"""

from __future__ import annotations

from typing import Any

from mlops.errors import MlopsError
from mlops.local.s3store import S3StoreError
from mlops.local.state.lineage import data_outputs
from mlops.project import DeployPlan, DeployRequest, GateResult
from mlops.serving import supervisor
from steps.multi_model.code.publish_model import target_model
from steps.smoke_test.code.smoke_test import SmokeTestFailed, load_samples, run_smoke_test


class SamplesUnavailable(MlopsError):
    """The smoke test has no rows to send."""


def test_split_uri(home, execution_id: str) -> str | None:
    """The S3 URI of the test split that the execution's Preprocess step wrote, if it ran."""
    outputs = data_outputs(home, execution_id)  # {"Step.output": uri}, in the order the steps ran
    return next((uri for name, uri in outputs.items() if name.endswith(".test")), None)


def samples_uri(request: DeployRequest) -> str:
    execution_id = request.package.get("execution_id")
    if execution_id:
        uri = test_split_uri(request.home, execution_id)
        if uri and request.store.list(uri.rstrip("/") + "/"):
            return uri
        execution = request.home.runs.get(execution_id)
        uri = ((execution or {}).get("parameters") or {}).get("InputDataUri")
        if uri:
            return uri
    return request.cfg.data.input_uri


def plan_deploy(request: DeployRequest) -> DeployPlan:
    settings = request.cfg.endpoints.smoke_test
    uri = samples_uri(request)
    try:
        rows, labels = load_samples(str(request.store.path(uri)), settings.samples)
    except (S3StoreError, SmokeTestFailed, OSError) as err:
        raise SamplesUnavailable(f"smoke-test samples {uri}: {err}") from None

    endpoints = request.cfg.endpoints
    # a multi-model stage serves the version that its TargetModel names (published by the deploy)
    multi_model = {
        f"{request.cfg.project.name}-{stage}": target_model(request.package["arn"])
        for stage in ("staging", "production")
        if getattr(endpoints, stage).mode == "multi-model"
    }

    def gate(endpoint: str, url: str) -> GateResult:
        def invoke(body: bytes, content_type: str) -> tuple[int, bytes]:
            result = supervisor.post(url, body, content_type, target_model=multi_model.get(endpoint))
            return result.status, result.body

        report: dict[str, Any] = run_smoke_test(
            invoke, rows, labels, settings.min_accuracy, settings.max_p95_latency_ms
        )
        reason = str(report.get("reason") or "").removeprefix("smoke test failed: ")
        return GateResult(bool(report["passed"]), reason, report)

    return DeployPlan(
        parameters={"TargetStage": request.target_stage, "SmokeTestDataUri": uri},
        gate=gate,
    )
