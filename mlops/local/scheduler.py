"""Run a pipeline definition JSON on this machine: DAG, parallel scheduling, caching, retries, resume, signals.

The executor reads only the definition (the artifact SageMaker runs). Each job step is handed, with its
Arguments resolved, to the job runtime in ``mlops.local.runtime``; everything it learns is recorded in the
home's SQLite so that ``executions show`` and ``--resume`` work from another process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mlops.definition.expressions import (
    Context,
    dumps_canonical,
    parameter_values,
    references,
    resolve,
)
from mlops.errors import DefinitionError, MlopsError
from mlops.local.arns import arn_prefix
from mlops.local.handlers import model_steps
from mlops.local.state.home import Home, now

log = logging.getLogger(__name__)

JOB_TYPES = ("Processing", "Training")
ENDPOINT_TYPES = ("EndpointConfig", "Endpoint")
SUPPORTED_TYPES = (*JOB_TYPES, "Condition", "Fail", "RegisterModel", "Model", "CreateModel", *ENDPOINT_TYPES)
TERMINAL = ("Succeeded", "Failed", "Stopped", "NotExecuted")
_STEP_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,256}$")
# Request sections that name where a job writes, not what it reads: they stay out of the input digests.
_OUTPUT_KEYS = {
    "ProcessingOutputConfig",
    "OutputDataConfig",
    "CheckpointConfig",
    "DebugHookConfig",
    "TensorBoardOutputConfig",
    "ProfilerConfig",
    "DebugRuleConfigurations",
    "ProfilerRuleConfigurations",
}
# How a local job failure maps onto the ExceptionType names of RetryPolicies. Anything else is the
# algorithm's own error, which SageMaker does not retry either.
FAILURE_CLASSES = (
    ("SageMaker.CAPACITY_ERROR", re.compile(r"capacity", re.I)),
    ("SageMaker.RESOURCE_LIMIT", re.compile(r"resource ?limit|ResourceLimitExceeded|quota exceeded", re.I)),
    ("Step.THROTTLING", re.compile(r"throttl|rate exceeded|too many requests|SlowDown", re.I)),
    ("SageMaker.JOB_INTERNAL_ERROR", re.compile(r"internal ?(server ?)?error|InternalFailure", re.I)),
    ("Step.SERVICE_FAULT", re.compile(r"service ?fault|ServiceUnavailable", re.I)),
)


def classify_failure(reason: str | None) -> str | None:
    """The RetryPolicies ExceptionType a failure reason belongs to, or None when it is not retryable."""
    for name, pattern in FAILURE_CLASSES:
        if reason and pattern.search(reason):
            return name
    return None


# ------------------------------------------------------------------------------------------------ records


@dataclass
class StepRecord:
    name: str
    type: str
    status: str = "Pending"
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
            status=row["status"],
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
        row = home.execution(execution_id)
        if row is None:
            raise MlopsError(f"no execution {execution_id} in {home.root}")
        steps = {r["name"]: StepRecord.from_row(r) for r in home.steps(row["id"])}
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


# --------------------------------------------------------------------------------------------------- plan


@dataclass
class PlanStep:
    name: str
    type: str
    spec: dict[str, Any]
    branch: tuple[str, bool] | None = None  # (condition step, True for IfSteps) when inside a branch
    deps: set[str] = field(default_factory=set)

    @property
    def arguments(self) -> dict[str, Any]:
        return self.spec.get("Arguments") or {}


def plan(definition: Mapping[str, Any]) -> dict[str, PlanStep]:
    """Flatten the steps (condition branches included), check types and references, order them.

    Raises DefinitionError naming the step before anything runs: unsupported type, unknown reference,
    duplicate name or a cycle.
    """
    if not isinstance(definition, Mapping) or not isinstance(definition.get("Steps"), list):
        raise DefinitionError("not a pipeline definition: expected a JSON object with a Steps list")
    steps: dict[str, PlanStep] = {}

    def add(spec: Any, branch: tuple[str, bool] | None) -> None:
        if not isinstance(spec, Mapping):
            raise DefinitionError(f"a step must be a JSON object, got {spec!r:.60}")
        name, kind = spec.get("Name"), spec.get("Type")
        if not isinstance(name, str) or not _STEP_NAME.match(name):
            raise DefinitionError(f"invalid step Name {name!r} (letters, digits, - and _)")
        if name in steps:
            if steps[name].spec == spec:
                return
            raise DefinitionError(f"two different steps are named {name}")
        if kind not in SUPPORTED_TYPES:
            raise DefinitionError(
                f"step {name}: type {kind} is not supported by the local executor "
                f"(supported: {', '.join(SUPPORTED_TYPES)})"
            )
        steps[name] = PlanStep(name, kind, dict(spec), branch)
        if kind == "Condition":
            args = spec.get("Arguments") or {}
            for key, taken in (("IfSteps", True), ("ElseSteps", False)):
                for child in args.get(key) or []:
                    add(child, (name, taken))

    for spec in definition["Steps"]:
        add(spec, None)

    for step in steps.values():
        depends_on = step.spec.get("DependsOn") or []
        if not isinstance(depends_on, list):
            raise DefinitionError(f"step {step.name}: DependsOn must be a list of step names")
        args = step.arguments
        if step.type == "Condition":
            args = {"Conditions": args.get("Conditions")}
        refs = references(args) | references(step.spec.get("PropertyFiles") or [])
        for dep in [*depends_on, *sorted(refs)]:
            if dep not in steps:
                raise DefinitionError(f"step {step.name} refers to unknown step {dep!r}")
            step.deps.add(dep)
        if step.branch:
            step.deps.add(step.branch[0])
        if step.name in step.deps:
            raise DefinitionError(f"step {step.name} depends on itself")
    return _ordered(steps)


def _ordered(steps: dict[str, PlanStep]) -> dict[str, PlanStep]:
    order: list[str] = []
    indegree = {n: len(s.deps) for n, s in steps.items()}
    children: dict[str, list[str]] = {n: [] for n in steps}
    for s in steps.values():
        for d in s.deps:
            children[d].append(s.name)
    ready = [n for n in steps if indegree[n] == 0]
    while ready:
        n = ready.pop(0)
        order.append(n)
        for c in children[n]:
            indegree[c] -= 1
            if indegree[c] == 0:
                ready.append(c)
    if len(order) < len(steps):
        raise DefinitionError(f"the steps form a cycle: {' -> '.join(_cycle(steps, set(order)))}")
    return {n: steps[n] for n in order}


def _cycle(steps: dict[str, PlanStep], done: set[str]) -> list[str]:
    start = next(n for n in steps if n not in done)
    path, seen = [start], {start}
    while True:
        nxt = sorted(d for d in steps[path[-1]].deps if d not in done)[0]
        if nxt in seen:
            return path[path.index(nxt) :] + [nxt]
        path.append(nxt)
        seen.add(nxt)


# ------------------------------------------------------------------------------------------- durations


def parse_duration(text: str) -> timedelta:
    """ISO 8601 ``P30D`` / ``PT1H`` / ``P1Y2M``: months are 30 days and years 365, as caching needs no more."""
    m = re.fullmatch(
        r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?",
        text or "",
    )
    if not m or text in ("P", "PT"):
        raise DefinitionError(f"CacheConfig ExpireAfter {text!r} is not an ISO 8601 duration")
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return timedelta(days=365 * y + 30 * mo + 7 * w + d, hours=h, minutes=mi, seconds=s)


# ------------------------------------------------------------------------------------------------ running


def new_execution_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(12))


@dataclass
class _Outcome:
    status: str
    properties: dict[str, Any] | None = None
    failure_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    log_paths: list[str] = field(default_factory=list)
    cache_hit: bool = False
    cache_key: str | None = None
    attempts: int = 1
    job_dir: str | None = None


class _Run:
    def __init__(
        self,
        definition: dict[str, Any],
        steps: dict[str, PlanStep],
        *,
        home: Home,
        execution_id: str,
        pipeline_name: str,
        params: dict[str, Any],
        use_cache: bool,
        max_parallel: int,
        file_systems: dict[str, str] | None,
        on_event: Callable[[Event], None] | None,
        stop: threading.Event,
        services: Any = None,
        endpoint_ports: dict[str, int] | None = None,
        endpoint_gate: Callable[[str, str], None] | None = None,
    ):
        from mlops.local.s3store import S3Store

        self.definition = definition
        self.steps = steps
        self.home = home
        self.store = S3Store(home.s3_root)
        self.execution_id = execution_id
        self.pipeline_name = pipeline_name
        self.params = params
        self.use_cache = use_cache
        self.max_parallel = max_parallel
        self.file_systems = file_systems
        self.services = services
        self.endpoint_ports = endpoint_ports or {}
        self.endpoint_gate = endpoint_gate
        self.on_event = on_event
        self.stop = stop
        self.prefix = arn_prefix(definition)
        self.started = now()
        self.lock = threading.Lock()
        self.records: dict[str, StepRecord] = {n: StepRecord(n, s.type) for n, s in steps.items()}
        self.properties: dict[str, dict[str, Any]] = {}

    # -------------------------------------------------------------------------------- events and records

    def emit(self, kind: str, step: str | None = None, status: str | None = None, message: str = "") -> None:
        if kind not in ("log", "step-listed"):
            self.home.add_event(self.execution_id, kind, step, message or (status or ""))
        if self.on_event:
            record = self.records.get(step) if step else None
            try:
                self.on_event(Event(kind, self.execution_id, step, status, message, record))
            except Exception:  # a broken progress display must not break the run
                log.exception("on_event callback failed")

    def save(self, name: str, **fields: Any) -> None:
        with self.lock:
            rec = self.records[name]
            for k, v in fields.items():
                if hasattr(rec, k):
                    setattr(rec, k, v)
        self.home.upsert_step(self.execution_id, name, type=self.steps[name].type, **fields)

    def context(self, job_name: str | None = None, symbolic: bool = False) -> Context:
        start = self.started
        arn = f"{self.prefix}:pipeline/{self.pipeline_name}"
        execution = {
            "PipelineExecutionId": self.execution_id,
            "PipelineExecutionArn": f"{arn}/execution/{self.execution_id}",
            "PipelineName": self.pipeline_name,
            "PipelineArn": arn,
            "StartDateTime": start,
            "CurrentDateTime": now,
            "TrainingJobName": job_name or "",
            "ProcessingJobName": job_name or "",
        }
        with self.lock:
            steps = dict(self.properties)
        return Context(self.params, execution, steps, read_json=self.read_json, symbolic_execution=symbolic)

    def read_text(self, uri: str) -> str:
        path = Path(self.store.path(uri))
        if not path.is_file():
            raise MlopsError(f"{uri} not found in the local store ({path})")
        return path.read_text()

    def read_json(self, uri: str) -> Any:
        text = self.read_text(uri)
        try:
            return json.loads(text)
        except ValueError as err:
            raise MlopsError(f"{uri} is not JSON: {err}") from None

    # ----------------------------------------------------------------------------------------- schedule

    def restore(self, previous: list[dict[str, Any]]) -> None:
        """Keep what a resumed execution already finished; everything else runs again."""
        for row in previous:
            name = row["name"]
            if name in self.steps and row["status"] == "Succeeded" and row["properties"] is not None:
                self.records[name] = StepRecord.from_row(row)
                self.properties[name] = row["properties"]

    def run(self) -> tuple[str, str | None]:
        for name, step in self.steps.items():
            if self.records[name].status != "Succeeded":
                self.home.upsert_step(
                    self.execution_id,
                    name,
                    type=step.type,
                    status="Pending",
                    started_at=None,
                    ended_at=None,
                    duration_s=None,
                    failure_reason=None,
                    cache_hit=0,
                )
        self.emit("execution-started", status="Executing")
        for name, rec in self.records.items():  # lets a progress view list every step from the start
            self.emit("step-listed", name, rec.status)
        failure: str | None = None
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=self.max_parallel, thread_name_prefix="step") as pool:
            while True:
                if not self.stop.is_set() and failure is None:
                    for name in self._ready(running.values()):
                        self.save(name, status="Executing", started_at=now(), ended_at=None)
                        self.emit("step-started", name, "Executing")
                        running[pool.submit(self._execute, self.steps[name])] = name
                if not running:
                    break
                done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    outcome = self._outcome(fut, name)
                    self._finish(name, outcome)
                    if outcome.status == "Failed" and failure is None:
                        failure = self._execution_reason(name, outcome)
        if self.stop.is_set() and failure is None:
            return "Stopped", "stopped by a signal"
        if failure is not None:
            return "Failed", failure
        if any(r.status not in ("Succeeded", "NotExecuted") for r in self.records.values()):
            return "Failed", "some steps could not run"
        return "Succeeded", None

    def _ready(self, running) -> list[str]:
        busy = set(running)
        ready = []
        for name, step in self.steps.items():
            rec = self.records[name]
            if rec.status != "Pending" or name in busy:
                continue
            dep_status = [self.records[d].status for d in step.deps]
            if any(s not in TERMINAL for s in dep_status) or any(
                s in ("Failed", "Stopped") for s in dep_status
            ):
                continue
            skipped = "NotExecuted" in dep_status
            if step.branch and not skipped:
                cond, taken = step.branch
                skipped = bool(self.properties[cond].get("Outcome")) != taken
            if skipped:
                self.save(name, status="NotExecuted")
                self.emit("step-finished", name, "NotExecuted")
                return [*ready, *self._ready(busy | set(ready))]  # a skip may unlock more skips
            ready.append(name)
        return ready

    def _outcome(self, fut: Future, name: str) -> _Outcome:
        try:
            return fut.result()
        except MlopsError as err:
            return _Outcome("Failed", failure_reason=str(err))
        except Exception as err:  # the step's code path, not the user's: keep the run recordable
            log.exception("step %s raised", name)
            return _Outcome("Failed", failure_reason=f"{type(err).__name__}: {err}")

    def _finish(self, name: str, out: _Outcome) -> None:
        ended = now()
        started = self.records[name].started_at or ended
        duration = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
        if out.cache_hit:
            duration = 0.0
        fields: dict[str, Any] = dict(
            status=out.status,
            ended_at=ended,
            duration_s=duration,
            failure_reason=out.failure_reason,
            properties=out.properties,
            metrics=out.metrics,
            log_paths=out.log_paths,
            cache_hit=int(out.cache_hit),
            attempts=out.attempts,
            job_dir=out.job_dir,
        )
        if out.cache_key and not out.cache_hit:  # expiry counts from the run that made the outputs
            fields["cache_key"] = out.cache_key
        self.save(name, **fields)
        self.records[name].cache_hit = out.cache_hit
        if out.status == "Succeeded":
            with self.lock:
                self.properties[name] = out.properties or {}
        message = "cache hit" if out.cache_hit else (out.failure_reason or "")
        self.emit("step-finished", name, out.status, message)

    def _execution_reason(self, name: str, out: _Outcome) -> str:
        if self.steps[name].type == "Fail":
            return out.failure_reason or "Fail step reached"
        lines = [ln.strip() for ln in (out.failure_reason or "").splitlines() if ln.strip()]
        return f"step {name} failed: {lines[-1] if lines else 'no reason recorded'}"

    # -------------------------------------------------------------------------------------------- steps

    def _execute(self, step: PlanStep) -> _Outcome:
        if step.type in JOB_TYPES:
            return self._job(step)
        ctx = self.context()
        if step.type == "Condition":
            outcome = model_steps.condition_outcome(step.arguments, ctx)
            return _Outcome("Succeeded", {"Outcome": outcome})
        if step.type == "Fail":
            return _Outcome("Failed", {}, failure_reason=model_steps.fail_message(step.arguments, ctx))
        request = resolve(step.arguments, ctx)
        if step.type in ENDPOINT_TYPES:
            from mlops.local.handlers import endpoint_steps

            try:
                if step.type == "EndpointConfig":
                    props = endpoint_steps.create_endpoint_config(self.home, request, prefix=self.prefix)
                else:
                    port = self.endpoint_ports.get(request.get("EndpointName"))
                    props = endpoint_steps.create_or_update_endpoint(
                        self.home, self.store, request, prefix=self.prefix, port=port, gate=self.endpoint_gate
                    )
            except MlopsError as err:
                return _Outcome("Failed", {}, failure_reason=str(err))
            return _Outcome("Succeeded", props)
        if step.type == "RegisterModel":
            props = model_steps.register_model(
                self.home,
                request,
                read_text=self.read_text,
                execution_id=self.execution_id,
                step=step.name,
                prefix=self.prefix,
            )
        else:
            props = model_steps.create_model(
                self.home, request, execution_id=self.execution_id, step=step.name, prefix=self.prefix
            )
        return _Outcome("Succeeded", props)

    def _job_name(self, step: PlanStep) -> str:
        base = re.sub(r"[^A-Za-z0-9-]", "-", f"pipelines-{self.execution_id}-{step.name}")
        digest = hashlib.sha256(f"{self.execution_id}/{step.name}".encode()).hexdigest()[:8]
        return f"{base[:54].rstrip('-')}-{digest}"

    def _cache_key(self, step: PlanStep, request: dict[str, Any]) -> str:
        symbolic = resolve(step.arguments, self.context(symbolic=True))
        digests = {}
        for uri in sorted(_input_uris(request)):
            try:
                digests[uri] = self.store.digest(uri)
            except Exception:  # a missing input fails the job itself; here it only makes the key differ
                digests[uri] = "missing"
        blob = dumps_canonical({"type": step.type, "arguments": symbolic, "inputs": digests})
        return hashlib.sha256(blob.encode()).hexdigest()

    def _outputs_present(self, step: PlanStep, props: Mapping[str, Any]) -> bool:
        uris: list[str] = []
        if step.type == "Processing":
            for out in (props.get("ProcessingOutputConfig") or {}).get("Outputs") or []:
                uri = (out.get("S3Output") or {}).get("S3Uri")
                if uri:
                    uris.append(uri)
        else:
            uri = (props.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
            if uri:
                uris.append(uri)
        try:
            return all(self.store.exists(u) or bool(self.store.list(u.rstrip("/") + "/")) for u in uris)
        except Exception:
            return False

    def _job(self, step: PlanStep) -> _Outcome:
        from mlops.local.runtime import run_processing_job, run_training_job

        job_name = self._job_name(step)
        request = resolve(step.arguments, self.context(job_name))
        cache = step.spec.get("CacheConfig") or {}
        key = None
        if cache.get("Enabled"):
            key = self._cache_key(step, request)
            if self.use_cache:
                expire = parse_duration(cache["ExpireAfter"]) if cache.get("ExpireAfter") else None
                not_before = (datetime.now(UTC) - expire).isoformat() if expire else ""
                hit = self.home.cached_step(key, not_before)
                if hit and self._outputs_present(step, hit["properties"] or {}):
                    return _Outcome(
                        "Succeeded",
                        hit["properties"],
                        metrics=hit["metrics"] or {},
                        log_paths=hit["log_paths"] or [],
                        cache_hit=True,
                        cache_key=key,
                        attempts=0,
                        job_dir=hit["job_dir"],
                    )
        runner = run_processing_job if step.type == "Processing" else run_training_job
        policies = step.spec.get("RetryPolicies") or []
        first_try = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            job_dir = self.home.execution_dir(self.execution_id) / step.name / f"attempt-{attempt}"
            self.save(step.name, attempts=attempt, job_dir=str(job_dir))
            error_class = None
            try:
                result = runner(
                    request,
                    job_name=job_name if attempt == 1 else f"{job_name[:56]}-r{attempt}",
                    store=self.store,
                    job_dir=job_dir,
                    on_log=lambda host, line, _n=step.name: self.emit("log", _n, message=f"[{host}] {line}"),
                    cancel=self.stop,
                    file_systems=self.file_systems,
                    services=self.services,
                )
                status, reason = result.status, result.failure_reason
            except MlopsError as err:
                status, reason, result = "Failed", str(err), None
            except Exception as err:
                log.exception("job runtime raised for step %s", step.name)
                status, reason, result = "Failed", f"{type(err).__name__}: {err}", None
                error_class = "Step.SERVICE_FAULT"
            logs = [str(p) for p in (getattr(result, "log_paths", None) or [])]
            if status == "Completed":
                props = dict(result.properties or {})
                props.update(self._property_files(step, request))
                return _Outcome(
                    "Succeeded",
                    props,
                    metrics={k: float(v) for k, v in (result.metrics or {}).items()},
                    log_paths=logs,
                    cache_key=key,
                    attempts=attempt,
                    job_dir=str(job_dir),
                )
            if status == "Stopped" or self.stop.is_set():
                return _Outcome(
                    "Stopped", failure_reason=reason or "stopped", log_paths=logs, attempts=attempt
                )
            delay = _retry_delay(policies, error_class or classify_failure(reason), attempt, first_try)
            if delay is None:
                return _Outcome(
                    "Failed",
                    failure_reason=reason or "job failed",
                    log_paths=logs,
                    attempts=attempt,
                    job_dir=str(job_dir),
                )
            self.emit("step-retry", step.name, "Executing", f"attempt {attempt} failed ({reason}); retrying")
            if self.stop.wait(delay):
                return _Outcome("Stopped", failure_reason="stopped", log_paths=logs, attempts=attempt)

    def _property_files(self, step: PlanStep, request: Mapping[str, Any]) -> dict[str, Any]:
        files = step.spec.get("PropertyFiles") or []
        if not files:
            return {}
        outputs = {
            o.get("OutputName"): (o.get("S3Output") or {}).get("S3Uri")
            for o in (request.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        }
        found = {}
        for pf in files:
            name, output = pf.get("PropertyFileName"), pf.get("OutputName")
            if output not in outputs or not outputs[output]:
                raise DefinitionError(
                    f"step {step.name}: property file {name} names unknown output {output!r}"
                )
            found[name] = outputs[output].rstrip("/") + "/" + str(pf.get("FilePath", "")).lstrip("/")
        return {"PropertyFiles": found}


def _retry_delay(policies: list[Mapping[str, Any]], error_class: str | None, attempt: int, since: float):
    """Seconds to wait before the next attempt, or None when no policy covers this failure any more."""
    if not error_class:
        return None
    for policy in policies:
        if error_class not in (policy.get("ExceptionType") or []):
            continue
        interval = float(policy.get("IntervalSeconds", 1))
        rate = float(policy.get("BackoffRate", 2.0))
        delay = interval * rate ** (attempt - 1)
        if "MaxAttempts" in policy and attempt > int(policy["MaxAttempts"]):
            continue
        if "ExpireAfterMin" in policy and time.monotonic() + delay - since > 60 * float(
            policy["ExpireAfterMin"]
        ):
            continue
        return delay
    return None


def _input_uris(request: Any, key: str | None = None) -> set[str]:
    if key in _OUTPUT_KEYS:
        return set()
    if isinstance(request, Mapping):
        found: set[str] = set()
        for k, v in request.items():
            found |= _input_uris(v, k)
        return found
    if isinstance(request, list):
        return set().union(*(_input_uris(v, key) for v in request)) if request else set()
    if isinstance(request, str) and request.startswith("s3://"):
        return {request}
    return set()


# --------------------------------------------------------------------------------------------------- API


@dataclass
class _Signals:
    """Turn SIGINT/SIGTERM into a stop event while a run is in progress (main thread only)."""

    stop: threading.Event
    saved: dict = field(default_factory=dict)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        log.warning("received %s: stopping every step", signal.Signals(signum).name)
        self.stop.set()

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def run_definition(
    definition: dict[str, Any],
    *,
    home: Path | str | None = None,
    params: Mapping[str, Any] | None = None,
    resume: str | None = None,
    use_cache: bool = True,
    max_parallel: int | None = None,
    file_systems: dict[str, str] | None = None,
    on_event: Callable[[Event], None] | None = None,
    pipeline_name: str | None = None,
    stop: threading.Event | None = None,
    endpoint_ports: dict[str, int] | None = None,
    endpoint_gate: Callable[[str, str], None] | None = None,
) -> ExecutionRecord:
    """Run ``definition`` (the parsed pipeline definition JSON) locally and return what was recorded.

    Everything that can be checked is checked before the first step starts (step types, references,
    cycles, parameter names and types). ``resume`` re-runs only the steps of that execution that did not
    succeed; ``stop`` (or SIGINT/SIGTERM in the main thread) stops every job and records Stopped.
    A definition with endpoint steps (a deploy pipeline) gets local stand-ins for the AWS APIs its jobs
    call (``aws_standin``); ``endpoint_ports`` pins endpoint names to local ports, and ``endpoint_gate(name,
    url)`` checks each new endpoint version before it takes traffic (raise to keep the old one).
    """
    h = Home.open(home)
    steps = plan(definition)
    stop = stop or threading.Event()
    previous: list[dict[str, Any]] = []
    if resume:
        row = h.execution(resume)
        if row is None:
            raise MlopsError(f"no execution {resume} in {h.root}")
        values = parameter_values(definition, {**row["parameters"], **(params or {})})
        h.claim_execution(row["id"], definition, values)
        execution_id, name = row["id"], row["pipeline_name"]
        previous = h.steps(execution_id)
    else:
        values = parameter_values(definition, params or {})
        execution_id = new_execution_id()
        name = pipeline_name or (definition.get("Metadata") or {}).get("PipelineName") or "local-pipeline"
        h.create_execution(execution_id, name, definition, values)
    parallel = max(1, max_parallel or os.cpu_count() or 1)
    status, reason = "Failed", "the executor stopped unexpectedly"
    services = contextlib.ExitStack()
    try:
        aws = None
        if any(st.type in ENDPOINT_TYPES for st in steps.values()):
            from mlops.local.aws_standin import LocalAws

            aws = services.enter_context(LocalAws(h.root, arn_prefix(definition).split(":")[3]))
        run = _Run(
            definition,
            steps,
            home=h,
            execution_id=execution_id,
            pipeline_name=name,
            params=values,
            use_cache=use_cache,
            max_parallel=parallel,
            file_systems=file_systems,
            on_event=on_event,
            stop=stop,
            services=aws,
            endpoint_ports=endpoint_ports,
            endpoint_gate=endpoint_gate,
        )
        run.restore(previous)
        with _Signals(stop):
            status, reason = run.run()
    finally:
        services.close()
        h.finish_execution(execution_id, status, reason)
        h.add_event(execution_id, "execution-finished", None, reason or status)
        if on_event:
            on_event(Event("execution-finished", execution_id, None, status, reason or ""))
    return ExecutionRecord.load(h, execution_id)
