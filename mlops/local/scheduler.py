"""The local scheduler: runs a pipeline definition JSON on this machine, knowing no step type.

It parses the definition once (``mlops.definition.model``), checks everything that can be checked before
the first step starts, then runs every ready step in parallel, each through the handler registered for
its type (``mlops.local.handlers``). Everything it learns is recorded in the home's SQLite so that
``executions show`` and ``--resume`` work from another process; SIGINT/SIGTERM stop every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops.definition.expressions import Context
from mlops.definition.model import Definition, Step
from mlops.definition.parameters import parameter_values
from mlops.errors import DefinitionError, MlopsError, ParameterError
from mlops.local import handlers
from mlops.local.arns import arn_prefix
from mlops.local.options import RunOptions
from mlops.local.records import (
    TERMINAL,
    Event,
    ExecutionRecord,
    Outcome,
    StepRecord,
    StepStatus,
    new_execution_id,
)
from mlops.local.state.home import Home, now

log = logging.getLogger(__name__)

# Steps whose jobs call AWS APIs get local stand-ins for them: S3 (the store, for any job) and the deploy
# steps' APIs. Cheap until used: moto starts on its first request, rclone when the first job starts.
NEEDS_AWS_STANDINS = ("Processing", "Training", "Tuning", "EndpointConfig", "Endpoint", "Lambda")


def plan(
    definition: Mapping[str, Any],
    images: Mapping[str, Any] | None = None,
    lambda_functions: Mapping[str, str] | None = None,
) -> Definition:
    """The parsed definition, refused before anything runs on the first blocker that ``mlops.local.check``
    finds (a step type without a handler, a request of the wrong shape, an image that cannot run here)."""
    from mlops.local.check import check

    result = check(definition, images, lambda_functions=lambda_functions)
    if result.blockers:
        more = len(result.blockers) - 1
        hint = f" (and {more} more: see mlops run --check)" if more else ""
        raise DefinitionError(result.blockers[0] + hint)
    assert result.model is not None
    return result.model


class RunningExecution:
    """One execution in progress: what handlers see (home, store, context, options) and the scheduling."""

    def __init__(
        self,
        model: Definition,
        *,
        home: Home,
        execution_id: str,
        pipeline_name: str,
        params: dict[str, Any],
        options: RunOptions,
        on_event: Callable[[Event], None] | None,
        stop: threading.Event,
        services: Any = None,
    ):
        from mlops.local.s3store import S3Store

        self.model = model
        self.definition = model.raw
        self.steps: dict[str, Step] = model.steps
        self.home = home
        self.store = S3Store(home.s3_root)
        self.execution_id = execution_id
        self.pipeline_name = pipeline_name
        self.params = params
        self.options = options
        self.max_parallel = max(1, options.max_parallel or os.cpu_count() or 1)
        self.services = services
        self.on_event = on_event
        self.stop = stop
        self.prefix = arn_prefix(model.raw)
        self.started = now()
        self.lock = threading.Lock()
        self.records: dict[str, StepRecord] = {n: StepRecord(n, s.type) for n, s in self.steps.items()}
        self.properties: dict[str, dict[str, Any]] = {}
        self.previous_attempts: dict[str, int] = {}

    # -------------------------------------------------------------------------------- events and records

    def emit(self, kind: str, step: str | None = None, status: str | None = None, message: str = "") -> None:
        if kind not in ("log", "step-listed"):
            self.home.events.add(self.execution_id, kind, step, message or (status or ""))
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
                    setattr(rec, k, StepStatus(v) if k == "status" else v)
        self.home.runs.upsert_step(self.execution_id, name, type=self.steps[name].type, **fields)

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
            self.previous_attempts[name] = int(row.get("attempts") or 0)  # attempt numbers go on from here
            if name in self.steps and row["status"] == "Succeeded" and row["properties"] is not None:
                self.records[name] = StepRecord.from_row(row)
                self.properties[name] = row["properties"]

    def run(self) -> tuple[str, str | None]:
        for name, step in self.steps.items():
            if self.records[name].status != "Succeeded":
                self.home.runs.upsert_step(
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

    def _outcome(self, fut: Future, name: str) -> Outcome:
        try:
            return fut.result()
        except MlopsError as err:
            return Outcome.failed(str(err))
        except Exception as err:  # the step's code path, not the user's: keep the run recordable
            log.exception("step %s raised", name)
            return Outcome.failed(f"{type(err).__name__}: {err}")

    def _finish(self, name: str, out: Outcome) -> None:
        ended = now()
        started = self.records[name].started_at or ended
        duration = (datetime.fromisoformat(ended) - datetime.fromisoformat(started)).total_seconds()
        if out.cache_hit:
            duration = 0.0
        fields: dict[str, Any] = dict(
            status=str(out.status),
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

    def _execution_reason(self, name: str, out: Outcome) -> str:
        if out.execution_reason:
            return out.execution_reason
        lines = [ln.strip() for ln in (out.failure_reason or "").splitlines() if ln.strip()]
        return f"step {name} failed: {lines[-1] if lines else 'no reason recorded'}"

    def _execute(self, step: Step) -> Outcome:
        handler = handlers.handler_for(step.type)
        try:
            return handler.run(step, self)
        except MlopsError as err:  # StepFailure included: the outcome is this step's anyway
            return Outcome.failed(str(err))


@dataclass
class _Signals:
    """Turn SIGINT/SIGTERM/SIGHUP (a closed terminal) into a stop event while a run is in progress (main
    thread only), so that every job is stopped and the execution recorded Stopped."""

    stop: threading.Event
    saved: dict = field(default_factory=dict)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, _frame):
        log.warning("received %s: stopping every step", signal.Signals(signum).name)
        self.stop.set()

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


def refuse_params_on_resume(resume: str | None, params: Mapping[str, Any] | None) -> None:
    """A resume re-runs the execution with its own parameters (SageMaker's RetryPipelineExecution)."""
    if resume and params:
        raise ParameterError(
            f"--param cannot be used with --resume: execution {resume} runs again with its own parameters"
            f" (given: {', '.join(sorted(dict(params)))})"
        )


def run_definition(
    definition: dict[str, Any],
    *,
    home: Home | Path | str,
    options: RunOptions | None = None,
    on_event: Callable[[Event], None] | None = None,
    **settings: Any,
) -> ExecutionRecord:
    """Run ``definition`` (the parsed pipeline definition JSON) locally and return what was recorded.

    Everything that can be checked is checked before the first step starts (step types, references,
    cycles, parameter names and types). ``options.resume`` re-runs only the steps of that execution that
    did not succeed; ``options.stop`` (or SIGINT/SIGTERM in the main thread) stops every job and records
    Stopped. A definition with endpoint steps gets local stand-ins for the AWS APIs its jobs call.
    """
    options = dataclasses.replace(options or RunOptions(), **settings)  # settings: RunOptions fields
    h = home if isinstance(home, Home) else Home.open(home)
    model = plan(definition, options.images, options.lambda_functions)
    if any(getattr(handlers.handler_for(s.type), "needs_sandbox", False) for s in model.steps.values()):
        from mlops.local.runtime.sandbox import sandbox_mode

        sandbox_mode()  # no isolation is never silent: refused before the run unless MLOPS_SANDBOX=none
    stop = options.stop or threading.Event()
    previous: list[dict[str, Any]] = []
    refuse_params_on_resume(options.resume, options.params)
    if options.resume:
        row = h.runs.get(options.resume)
        if row is None:
            raise MlopsError(f"no execution {options.resume} in {h.root}")
        values = parameter_values(definition, dict(row["parameters"]))
        h.runs.claim(row["id"], definition, values, options.source)
        execution_id, name = row["id"], row["pipeline_name"]
        previous = h.runs.steps(execution_id)
    else:
        values = parameter_values(definition, dict(options.params))
        execution_id = new_execution_id()
        name = (
            options.pipeline_name
            or (definition.get("Metadata") or {}).get("PipelineName")
            or "local-pipeline"
        )
        h.runs.create(execution_id, name, definition, values, options.source)
    status, reason = StepStatus.FAILED, "the executor stopped unexpectedly"
    services = contextlib.ExitStack()
    try:
        aws = None
        if any(st.type in NEEDS_AWS_STANDINS for st in model.steps.values()):
            from mlops.local.aws_standin import LocalAws

            aws = services.enter_context(LocalAws(h.root, arn_prefix(definition).split(":")[3]))
        run = RunningExecution(
            model, home=h, execution_id=execution_id, pipeline_name=name, params=values, options=options,
            on_event=on_event, stop=stop, services=aws,
        )  # fmt: skip
        run.restore(previous)
        with _Signals(stop):
            status, reason = run.run()
    finally:
        services.close()
        h.runs.finish(execution_id, str(status), reason)
        h.events.add(execution_id, "execution-finished", None, reason or str(status))
        if on_event:
            on_event(Event("execution-finished", execution_id, None, str(status), reason or ""))
    return ExecutionRecord.load(h, execution_id)
