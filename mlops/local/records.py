"""What a local run records: step and execution records, the events a progress view receives, step
statuses and the outcome a handler returns."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from mlops.errors import MlopsError

if TYPE_CHECKING:
    from mlops.local.state.home import Home


class StepStatus(StrEnum):
    PENDING = "Pending"
    EXECUTING = "Executing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"
    NOT_EXECUTED = "NotExecuted"


TERMINAL = (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.STOPPED, StepStatus.NOT_EXECUTED)


class StepFailure(MlopsError):
    """A step that could not do its work; it carries the step so nothing has to work it out afterwards."""

    def __init__(self, step: str, message: str):
        super().__init__(message)
        self.step = step


class RuntimeFault(MlopsError):
    """The local runtime itself failed for an infrastructure reason (not the job, not its request): the one
    kind of failure RetryPolicies cover, under ``exception_type`` (a RetryPolicies ExceptionType)."""

    def __init__(self, message: str, exception_type: str = "SageMaker.JOB_INTERNAL_ERROR"):
        super().__init__(message)
        self.exception_type = exception_type


@dataclass
class Outcome:
    """What a handler returns: the status and the properties its Describe* call would."""

    status: StepStatus
    properties: dict[str, Any] | None = None
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    log_paths: list[str] = field(default_factory=list)
    cache_hit: bool = False
    cache_key: str | None = None
    attempts: int = 1
    job_dir: str | None = None
    execution_reason: str | None = (
        None  # when set, the failed execution's reason is this, not "step X failed"
    )

    @classmethod
    def succeeded(cls, properties: dict[str, Any], **fields: Any) -> Outcome:
        return cls(StepStatus.SUCCEEDED, properties, **fields)

    @classmethod
    def failed(cls, reason: str, **fields: Any) -> Outcome:
        return cls(StepStatus.FAILED, fields.pop("properties", None), failure_reason=reason, **fields)


def new_execution_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


@dataclass
class StepRecord:
    name: str
    type: str
    status: StepStatus = StepStatus.PENDING
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    attempts: int = 0
    failure_reason: str | None = None
    properties: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    log_paths: list[str] = field(default_factory=list)
    cache_hit: bool = False
    job_dir: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> StepRecord:
        return cls(
            name=row["name"],
            type=row["type"],
            status=StepStatus(row["status"]),
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            duration_s=row["duration_s"],
            attempts=row["attempts"],
            failure_reason=row["failure_reason"],
            properties=row["properties"],
            metrics=row["metrics"] or {},
            log_paths=row["log_paths"] or [],
            cache_hit=bool(row["cache_hit"]),
            job_dir=row["job_dir"],
        )


@dataclass
class ExecutionRecord:
    id: str
    pipeline_name: str
    status: str
    started_at: str
    ended_at: str | None
    failure_reason: str | None
    parameters: dict[str, Any]
    steps: dict[str, StepRecord]
    home: str

    @classmethod
    def load(cls, home: Home, execution_id: str) -> ExecutionRecord:
        row = home.runs.get(execution_id)
        if row is None:
            raise MlopsError(f"no execution {execution_id} in {home.root}")
        steps = {r["name"]: StepRecord.from_row(r) for r in home.runs.steps(row["id"])}
        return cls(
            id=row["id"],
            pipeline_name=row["pipeline_name"],
            status=row["status"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            failure_reason=row["failure_reason"],
            parameters=row["parameters"],
            steps=steps,
            home=str(home.root),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["steps"] = [asdict(s) for s in self.steps.values()]
        return out


@dataclass
class Event:
    """What ``on_event`` receives: execution/step status changes and job log lines."""

    # execution-started | step-listed | step-started | step-finished | step-retry | log | execution-finished
    kind: str
    execution_id: str
    step: str | None = None
    status: str | None = None
    message: str = ""
    record: StepRecord | None = None
