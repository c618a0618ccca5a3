"""Processing and Training: a job of the local runtime, with CacheConfig and RetryPolicies honoured."""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mlops.definition.expressions import dumps_canonical, resolve
from mlops.errors import DefinitionError, MlopsError
from mlops.local import caching, retries
from mlops.local.records import Outcome, RuntimeFault, StepStatus

log = logging.getLogger(__name__)


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " ".join(lines) if len(lines) <= 3 else lines[-1]


def job_name(execution_id: str, step: str) -> str:
    base = re.sub(r"[^A-Za-z0-9-]", "-", f"pipelines-{execution_id}-{step}")
    digest = hashlib.sha256(f"{execution_id}/{step}".encode()).hexdigest()[:8]
    return f"{base[:54].rstrip('-')}-{digest}"


class JobHandler:
    kind = ""  # Processing | Training
    needs_sandbox = True  # the scheduler checks, before start, that jobs can be isolated here

    def runner(self):
        raise NotImplementedError

    def runner_for(self, execution):
        """The runner, given what of the execution it needs beyond the request (a transform: its model)."""
        return self.runner()

    def run(self, step, execution) -> Outcome:
        name = job_name(execution.execution_id, step.name)
        request = resolve(step.arguments, execution.context(name))
        cache = step.spec.get("CacheConfig") or {}
        key = None
        if cache.get("Enabled"):
            key = self.cache_key(step, request, execution)
            if execution.options.use_cache:
                hit = self.cache_hit(step, key, cache, execution)
                if hit is not None:
                    return hit
        return self.attempts(step, request, name, key, execution)

    # --------------------------------------------------------------------------------------------- cache

    def cache_key(self, step, request: dict[str, Any], execution) -> str:
        symbolic = resolve(step.arguments, execution.context(symbolic=True))
        digests = {}
        for uri in sorted(caching.input_uris(request)):
            try:
                digests[uri] = execution.store.digest(uri)
            except Exception:  # a missing input fails the job itself; here it only makes the key differ
                digests[uri] = "missing"
        blob = dumps_canonical({"type": step.type, "arguments": symbolic, "inputs": digests})
        return hashlib.sha256(blob.encode()).hexdigest()

    def cache_hit(self, step, key: str, cache: Mapping[str, Any], execution) -> Outcome | None:
        expire = caching.parse_duration(cache["ExpireAfter"]) if cache.get("ExpireAfter") else None
        not_before = (datetime.now(UTC) - expire).isoformat() if expire else ""
        hit = execution.home.runs.cached_step(key, not_before)
        if not hit or not self.outputs_present(hit["properties"] or {}, execution):
            return None
        return Outcome.succeeded(
            hit["properties"], metrics=hit["metrics"] or {}, log_paths=hit["log_paths"] or [], cache_hit=True,
            cache_key=key, attempts=0, job_dir=hit["job_dir"],
        )  # fmt: skip

    def output_uris(self, props: Mapping[str, Any]) -> list[str]:
        uri = (props.get("ModelArtifacts") or {}).get("S3ModelArtifacts")
        return [uri] if uri else []

    def outputs_present(self, props: Mapping[str, Any], execution) -> bool:
        store = execution.store
        try:
            return all(
                store.exists(u) or bool(store.list(u.rstrip("/") + "/")) for u in self.output_uris(props)
            )
        except Exception:
            return False

    # ------------------------------------------------------------------------------------------ attempts

    def attempts(self, step, request: dict[str, Any], name: str, key: str | None, execution) -> Outcome:
        """Runs the job until it succeeds or no RetryPolicy covers its failure.

        Attempts are numbered across resumes of the execution (``attempt-N`` dirs, ``-rN`` job names), so
        every attempt's logs stay; a policy's MaxAttempts counts the attempts of this run. Only a
        :class:`RuntimeFault` (the local runtime's own infrastructure) is retried: a job's own error, a
        request the runtime refuses and an OSError from the job's input fail the step with one line.
        """
        runner = self.runner_for(execution)
        policies = step.spec.get("RetryPolicies") or []
        first_try = time.monotonic()
        attempt = int(getattr(execution, "previous_attempts", {}).get(step.name) or 0)
        tries = 0
        while True:
            attempt += 1
            tries += 1
            job_dir = execution.home.execution_dir(execution.execution_id) / step.name / f"attempt-{attempt}"
            execution.save(step.name, attempts=attempt, job_dir=str(job_dir))
            status, reason, result, fault = self.call_runner(
                runner,
                request,
                job_name=name if attempt == 1 else f"{name[:56]}-r{attempt}",
                job_dir=job_dir,
                execution=execution,
                on_log=lambda host, line, _n=step.name: execution.emit("log", _n, message=f"[{host}] {line}"),
                cancel=execution.stop,
                step_name=step.name,
            )
            logs = [str(p) for p in (getattr(result, "log_paths", None) or [])]
            if status == "Completed":
                props = dict(result.properties or {})
                props.update(self.property_files(step, request))
                return Outcome.succeeded(
                    props, metrics={k: float(v) for k, v in (result.metrics or {}).items()}, log_paths=logs,
                    cache_key=key, attempts=attempt, job_dir=str(job_dir),
                )  # fmt: skip
            if status == "Stopped" or execution.stop.is_set():
                return Outcome(
                    StepStatus.STOPPED, failure_reason=reason or "stopped", log_paths=logs, attempts=attempt,
                    job_dir=str(job_dir),
                )  # fmt: skip
            delay = retries.retry_delay(policies, retries.classify_failure(fault), tries, first_try)
            if delay is None:
                return Outcome.failed(
                    reason or "job failed", log_paths=logs, attempts=attempt, job_dir=str(job_dir)
                )
            execution.emit(
                "step-retry", step.name, "Executing", f"attempt {attempt} failed ({reason}); retrying"
            )
            if execution.stop.wait(delay):
                return Outcome(StepStatus.STOPPED, failure_reason="stopped", log_paths=logs, attempts=attempt)

    def call_runner(
        self, runner, request, *, job_name: str, job_dir, execution, on_log, cancel, step_name: str
    ) -> tuple[str, str | None, Any, RuntimeFault | None]:
        """One job of the runtime: ``(status, failure reason, JobResult or None, RuntimeFault or None)``.

        A :class:`RuntimeFault` (the runtime's own infrastructure) is returned for RetryPolicies to judge; a
        job's own error, a request the runtime refuses and an OSError from the job's input are one line."""
        fault: RuntimeFault | None = None
        try:
            result = runner(
                request,
                job_name=job_name,
                store=execution.store,
                job_dir=job_dir,
                on_log=on_log,
                cancel=cancel,
                file_systems=dict(execution.options.file_systems),
                services=execution.services,
                images=dict(execution.options.images),
            )
            status, reason = result.status, result.failure_reason
        except RuntimeFault as err:
            log.warning("step %s: the local runtime failed: %s", step_name, err)
            status, reason, result, fault = "Failed", f"{err.exception_type}: {err}", None, err
        except MlopsError as err:
            status, reason, result = "Failed", _one_line(str(err)), None
        except OSError as err:
            log.debug("step %s: job runtime raised", step_name, exc_info=True)
            where = f" ({err.filename})" if err.filename else ""
            reason = f"cannot run the job: {type(err).__name__}: {err.strerror or err}{where}"
            status, result = "Failed", None
        except Exception as err:  # a request the runtime did not expect: the request's fault, not ours
            log.debug("step %s: job runtime raised", step_name, exc_info=True)
            status, reason, result = (
                "Failed",
                _one_line(f"invalid job request: {type(err).__name__}: {err}"),
                None,
            )
        return status, reason, result, fault

    def property_files(self, step, request: Mapping[str, Any]) -> dict[str, Any]:
        return {}


def _image_view(step, section: str, image_key: str):
    """``(Arguments, Arguments[section], StepView with the image)`` of a job step, whatever their shape."""
    from mlops.local.check import StepView

    args = step.spec.get("Arguments")
    args = args if isinstance(args, Mapping) else {}
    part = args.get(section)
    part = part if isinstance(part, Mapping) else {}
    image = part.get(image_key)
    shown = image if isinstance(image, str) else "" if image is None else "(from an expression)"
    return args, part, StepView(step.name, step.type, image=shown)


class ProcessingHandler(JobHandler):
    kind = "Processing"

    def describe(self, step, images):
        from mlops.local.check import describe_environment

        _, app, view = _image_view(step, "AppSpecification", "ImageUri")
        if app.get("ContainerEntrypoint"):
            view.runtime = "the request's ContainerEntrypoint"
            describe_environment(view, images)
        else:
            from mlops.local.runtime.processing import NO_COMMAND

            view.blockers.append(NO_COMMAND)
        return view

    def runner(self):
        from mlops.local.runtime import run_processing_job

        return run_processing_job

    def output_uris(self, props: Mapping[str, Any]) -> list[str]:
        outputs = (props.get("ProcessingOutputConfig") or {}).get("Outputs") or []
        return [o["S3Output"]["S3Uri"] for o in outputs if (o.get("S3Output") or {}).get("S3Uri")]

    def property_files(self, step, request: Mapping[str, Any]) -> dict[str, Any]:
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


class TrainingHandler(JobHandler):
    kind = "Training"

    def describe(self, step, images):
        from mlops.local.check import describe_environment
        from mlops.local.images.launch import ImageLaunchError, training_launch

        args, algo, view = _image_view(step, "AlgorithmSpecification", "TrainingImage")
        hps = args.get("HyperParameters") if isinstance(args.get("HyperParameters"), Mapping) else {}
        if view.image.startswith("(") or any(not isinstance(v, str) for v in hps.values()):
            view.runtime = "decided at run time (the image or hyperparameters are expressions)"
            return view
        try:
            view.runtime = training_launch(dict(algo), {k: str(v) for k, v in hps.items()}).description
        except ImageLaunchError as err:
            view.blockers.append(str(err))
            return view
        describe_environment(view, images)
        return view

    def runner(self):
        from mlops.local.runtime import run_training_job

        return run_training_job
