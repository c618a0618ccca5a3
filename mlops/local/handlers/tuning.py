"""Tuning: a CreateHyperParameterTuningJob request run here, each trial a real training job of the runtime.

The step's Arguments are the request (minus the job name). Every trial is a CreateTrainingJob request built
from ``TrainingJobDefinition`` with the sampled values merged into ``StaticHyperParameters`` (all strings,
as SageMaker passes them), run by the same runtime and code path as a Training step
(:meth:`JobHandler.call_runner`), under its own job name ``<tuning-job>-NNN-<hash>``, job dir, logs and
metrics. The objective is the trial's final value of the objective metric (its ``MetricDefinitions`` regex,
or a built-in algorithm's own definitions, as the runtime attaches them).

The search is optuna's:

- ``Random`` -> RandomSampler; ``Bayesian`` -> TPESampler; ``Hyperband`` -> RandomSampler with the
  HyperbandPruner (``StrategyConfig.HyperbandStrategyConfig`` Min/MaxResource), fed every value the
  objective regex matches while the trial runs (its epochs); a pruned trial is stopped, as SageMaker does;
- ``Grid`` -> GridSampler over every combination, and as SageMaker defines it: categorical ranges only,
  ``MaxNumberOfTrainingJobs`` optional and, when given, equal to the number of combinations;
- ``TrainingJobEarlyStoppingType: Auto`` (not Hyperband) -> a MedianPruner on the same intermediate values.

Scaling: ``Linear``; ``Logarithmic`` -> ``log=True`` (MinValue > 0); ``ReverseLogarithmic`` (continuous
only, 0 <= MinValue < MaxValue < 1) samples ``1 - x`` on a log scale over ``(1 - MaxValue, 1 - MinValue)``;
``Auto`` -> Logarithmic when MinValue > 0 and MaxValue / MinValue >= 100 (two orders of magnitude or more),
else Linear. ``RandomSeed`` (else ``DEFAULT_SEED``) seeds the sampler: with one trial at a time a run is
reproducible; with several in parallel, which results a Bayesian proposal sees depends on timing.

Trials run in threads, at most ``MaxParallelTrainingJobs`` and this machine's cores at once.
``TuningJobCompletionCriteria.TargetObjectiveMetricValue`` stops launching trials once reached. Not done
here (refused before start with the field named): ``WarmStartConfig``, ``Autotune``, more than one
``TrainingJobDefinitions`` entry. ``BestObjectiveNotImproving`` / ``ConvergenceDetected`` criteria are
ignored (the run goes to MaxNumberOfTrainingJobs). SageMaker's ``_tuning_objective_metric`` hyperparameter
is not added (argparse scripts without ``parse_known_args`` would reject it).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
import os
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from mlops.definition.expressions import is_expression
from mlops.errors import DefinitionError
from mlops.local import arns
from mlops.local.handlers.jobs import TrainingHandler
from mlops.local.records import Outcome, StepStatus

log = logging.getLogger(__name__)

DEFAULT_SEED = 0
STRATEGIES = ("Random", "Bayesian", "Grid", "Hyperband")
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
AUTO_LOG_RATIO = 100.0  # Auto is Logarithmic when the range spans this factor or more (and MinValue > 0)
CONFIG = "HyperParameterTuningJobConfig"
RANGES = f"{CONFIG}.ParameterRanges"
_KINDS = (
    ("IntegerParameterRanges", "integer"),
    ("ContinuousParameterRanges", "continuous"),
    ("CategoricalParameterRanges", "categorical"),
)
# Members of a HyperParameterTrainingJobDefinition that are not members of CreateTrainingJob.
_TUNING_ONLY = (
    "DefinitionName",
    "TuningObjective",
    "HyperParameterRanges",
    "StaticHyperParameters",
    "HyperParameterTuningResourceConfig",
)


class _Deferred(Exception):
    """A value the check cannot judge before start: an expression resolved at run time."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _value(container: Mapping[str, Any], key: str, where: str) -> Any:
    value = container.get(key)
    if is_expression(value):
        raise _Deferred(f"{where}.{key}")
    return value


def _number(raw: Any, where: str, kind: type) -> float | int:
    if is_expression(raw):
        raise _Deferred(where)
    try:
        if kind is int:
            as_float = float(str(raw))
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        value = float(str(raw))
        if not math.isfinite(value):
            raise ValueError
        return value
    except (TypeError, ValueError):
        noun = "an integer" if kind is int else "a number"
        raise DefinitionError(f"{where}: {raw!r} is not {noun}") from None


# ---------------------------------------------------------------------------------------------- ranges


@dataclass(frozen=True)
class Param:
    """One tunable hyperparameter as optuna samples it (``reverse``: the sampled value is ``1 - x``)."""

    name: str
    kind: str  # integer | continuous | categorical
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    reverse: bool = False
    values: tuple[str, ...] = ()

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "categorical":
            return d.CategoricalDistribution(list(self.values))
        if self.kind == "integer":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log)
        if self.reverse:
            return d.FloatDistribution(1.0 - self.high, 1.0 - self.low, log=True)
        return d.FloatDistribution(self.low, self.high, log=self.log)

    def hyperparameter(self, sampled: Any) -> str:
        """The value as the trial's HyperParameters carry it: a string."""
        if self.kind == "categorical":
            return str(sampled)
        if self.kind == "integer":
            return str(int(sampled))
        value = 1.0 - float(sampled) if self.reverse else float(sampled)
        return repr(min(max(value, self.low), self.high))


def _scaling(raw: Any, where: str, kind: str) -> str:
    scaling = raw if raw is not None else "Auto"
    if is_expression(scaling):
        raise _Deferred(where)
    if scaling not in SCALINGS:
        raise DefinitionError(f"{where}: unknown ScalingType {scaling!r} (one of {', '.join(SCALINGS)})")
    if scaling == "ReverseLogarithmic" and kind == "integer":
        raise DefinitionError(f"{where}: ReverseLogarithmic scaling is for continuous ranges only")
    return scaling


def parse_range(entry: Any, kind: str, where: str) -> Param:
    """One ``*ParameterRanges`` entry; raises DefinitionError naming the field."""
    if not isinstance(entry, Mapping):
        raise DefinitionError(f"{where}: a range is an object, not {type(entry).__name__}")
    name = _value(entry, "Name", where)
    if not isinstance(name, str) or not name:
        raise DefinitionError(f"{where}.Name: a range needs a Name")
    if kind == "categorical":
        values = entry.get("Values")
        if is_expression(values) or (isinstance(values, list) and any(is_expression(v) for v in values)):
            raise _Deferred(f"{where}.Values")
        if not isinstance(values, list) or not values:
            raise DefinitionError(f"{where}.Values: categorical range {name} has no values")
        return Param(name, kind, values=tuple(dict.fromkeys(str(v) for v in values)))
    number = int if kind == "integer" else float
    low = _number(entry.get("MinValue"), f"{where}.MinValue", number)
    high = _number(entry.get("MaxValue"), f"{where}.MaxValue", number)
    if low > high:
        raise DefinitionError(f"{where}: MinValue {low} is above MaxValue {high} (range {name})")
    scaling = _scaling(entry.get("ScalingType"), f"{where}.ScalingType", kind)
    if scaling == "Auto":
        scaling = "Logarithmic" if low > 0 and high / low >= AUTO_LOG_RATIO else "Linear"
    if scaling == "Logarithmic" and low <= 0:
        raise DefinitionError(f"{where}: Logarithmic scaling needs MinValue > 0 (range {name}: {low})")
    if scaling == "ReverseLogarithmic" and not (0 <= low < high < 1):
        raise DefinitionError(
            f"{where}: ReverseLogarithmic scaling needs 0 <= MinValue < MaxValue < 1 (range {name}: {low}..{high})"
        )
    if low == high:  # a single value: nothing to scale
        return Param(name, kind, low, high)
    return Param(name, kind, low, high, log=scaling == "Logarithmic", reverse=scaling == "ReverseLogarithmic")


def parse_ranges(ranges: Any, where: str = RANGES) -> list[Param]:
    if is_expression(ranges):
        raise _Deferred(where)
    if not isinstance(ranges, Mapping):
        raise DefinitionError(f"{where}: missing (the ranges to search)")
    params: list[Param] = []
    for key, kind in _KINDS:
        entries = ranges.get(key) or []
        if not isinstance(entries, list):
            raise DefinitionError(f"{where}.{key}: a list of ranges, not {type(entries).__name__}")
        params += [parse_range(e, kind, f"{where}.{key}[{i}]") for i, e in enumerate(entries)]
    if ranges.get("AutoParameters"):
        raise DefinitionError(
            f"{where}.AutoParameters: Autotune's ranges are chosen by SageMaker; not run locally"
        )
    if not params:
        raise DefinitionError(
            f"{where}: no ranges to search (IntegerParameterRanges, ContinuousParameterRanges and "
            "CategoricalParameterRanges are all empty)"
        )
    seen: set[str] = set()
    for p in params:
        if p.name in seen:
            raise DefinitionError(f"{where}: hyperparameter {p.name} has more than one range")
        seen.add(p.name)
    return params


# ------------------------------------------------------------------------------------------------ plan


@dataclass
class Plan:
    """What the request asks for, checked: one per run of the step."""

    strategy: str
    objective_type: str
    metric: str
    params: list[Param]
    max_jobs: int
    parallel: int
    early_stopping: str
    seed: int
    definition: dict[str, Any]
    definition_key: str  # TrainingJobDefinition | TrainingJobDefinitions[0]
    target: float | None = None
    hyperband: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> list[dict[str, str]]:
        names = [p.name for p in self.params]
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(p.values for p in self.params))
        ]

    def sampler(self):
        import optuna

        if self.strategy == "Bayesian":
            return optuna.samplers.TPESampler(
                seed=self.seed, n_startup_trials=min(10, max(2, self.max_jobs // 3))
            )
        if self.strategy == "Grid":
            return optuna.samplers.GridSampler({p.name: list(p.values) for p in self.params}, seed=self.seed)
        return optuna.samplers.RandomSampler(seed=self.seed)

    def pruner(self):
        import optuna

        if self.strategy == "Hyperband":
            return optuna.pruners.HyperbandPruner(
                min_resource=int(self.hyperband.get("MinResource") or 1),
                max_resource=int(self.hyperband["MaxResource"])
                if self.hyperband.get("MaxResource")
                else "auto",
            )
        if self.early_stopping == "Auto":
            return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
        return optuna.pruners.NopPruner()

    def better(self, a: float, b: float) -> bool:
        return a < b if self.objective_type == "Minimize" else a > b

    def reached(self, value: float) -> bool:
        if self.target is None:
            return False
        return value <= self.target if self.objective_type == "Minimize" else value >= self.target


def _int(container: Mapping[str, Any], key: str, where: str, default: int | None = None) -> int | None:
    raw = _value(container, key, where)
    if raw is None:
        return default
    value = _number(raw, f"{where}.{key}", int)
    if value < 1:
        raise DefinitionError(f"{where}.{key}: must be at least 1, not {value}")
    return int(value)


def parse_plan(request: Mapping[str, Any], cores: int | None = None) -> Plan:
    """The request checked as SageMaker checks it; raises DefinitionError naming the field (or _Deferred)."""
    config = request.get(CONFIG)
    if not isinstance(config, Mapping):
        raise DefinitionError(f"{CONFIG}: missing")
    for refused, why in (
        (
            "WarmStartConfig",
            "warm start from parent tuning jobs is not supported locally; remove it to tune here",
        ),
        ("Autotune", "Autotune (SageMaker choosing the tuning settings) is not supported locally"),
    ):
        if request.get(refused):
            raise DefinitionError(f"{refused}: {why}")
    definition, key = request.get("TrainingJobDefinition"), "TrainingJobDefinition"
    definitions = request.get("TrainingJobDefinitions")
    if definition is None and definitions:
        if not isinstance(definitions, list) or len(definitions) != 1:
            raise DefinitionError(
                "TrainingJobDefinitions: tuning over more than one training job definition is not supported "
                "locally; give one TrainingJobDefinition"
            )
        definition, key = definitions[0], "TrainingJobDefinitions[0]"
    if not isinstance(definition, Mapping):
        raise DefinitionError("TrainingJobDefinition: missing (the training job each trial runs)")
    strategy = _value(config, "Strategy", CONFIG)
    if strategy not in STRATEGIES:
        raise DefinitionError(
            f"{CONFIG}.Strategy: unknown strategy {strategy!r} (one of {', '.join(STRATEGIES)})"
        )
    objective = definition.get("TuningObjective") or config.get("HyperParameterTuningJobObjective")
    where = (
        f"{key}.TuningObjective"
        if definition.get("TuningObjective")
        else f"{CONFIG}.HyperParameterTuningJobObjective"
    )
    if not isinstance(objective, Mapping):
        raise DefinitionError(f"{CONFIG}.HyperParameterTuningJobObjective: missing (the metric to optimize)")
    objective_type = _value(objective, "Type", where)
    if objective_type not in ("Minimize", "Maximize"):
        raise DefinitionError(f"{where}.Type: {objective_type!r} is neither Minimize nor Maximize")
    metric = _value(objective, "MetricName", where)
    if not isinstance(metric, str) or not metric:
        raise DefinitionError(f"{where}.MetricName: missing")
    if definition.get("HyperParameterRanges") is not None:
        params = parse_ranges(definition.get("HyperParameterRanges"), f"{key}.HyperParameterRanges")
    else:
        params = parse_ranges(config.get("ParameterRanges"))
    limits = config.get("ResourceLimits") if isinstance(config.get("ResourceLimits"), Mapping) else {}
    lwhere = f"{CONFIG}.ResourceLimits"
    max_jobs = _int(limits, "MaxNumberOfTrainingJobs", lwhere)
    parallel = _int(limits, "MaxParallelTrainingJobs", lwhere, 1) or 1
    early = _value(config, "TrainingJobEarlyStoppingType", CONFIG) or "Off"
    if early not in ("Off", "Auto"):
        raise DefinitionError(f"{CONFIG}.TrainingJobEarlyStoppingType: {early!r} is neither Off nor Auto")
    hyperband: dict[str, Any] = {}
    if strategy == "Grid":
        continuous = [p for p in params if p.kind != "categorical"]
        if continuous:
            which = (
                "IntegerParameterRanges" if continuous[0].kind == "integer" else "ContinuousParameterRanges"
            )
            raise DefinitionError(
                f"{RANGES}.{which}: the Grid strategy searches categorical ranges only "
                f"({continuous[0].name} is {continuous[0].kind}); make it a CategoricalParameterRange"
            )
        combinations = math.prod(len(p.values) for p in params)
        if max_jobs is not None and max_jobs != combinations:
            raise DefinitionError(
                f"{lwhere}.MaxNumberOfTrainingJobs: with the Grid strategy it is the number of combinations "
                f"({combinations}) or left out, not {max_jobs}"
            )
        max_jobs = combinations
    elif max_jobs is None:
        raise DefinitionError(
            f"{lwhere}.MaxNumberOfTrainingJobs: missing (required for the {strategy} strategy)"
        )
    if strategy == "Hyperband":
        if early != "Off":
            raise DefinitionError(
                f"{CONFIG}.TrainingJobEarlyStoppingType: must be Off with the Hyperband strategy (it stops "
                "trials itself)"
            )
        strategy_config = config.get("StrategyConfig") or {}
        hyperband = dict(
            (strategy_config.get("HyperbandStrategyConfig") or {})
            if isinstance(strategy_config, Mapping)
            else {}
        )
    criteria = config.get("TuningJobCompletionCriteria") or {}
    target = None
    if isinstance(criteria, Mapping) and criteria.get("TargetObjectiveMetricValue") is not None:
        target = float(
            _number(
                criteria["TargetObjectiveMetricValue"],
                f"{CONFIG}.TuningJobCompletionCriteria.TargetObjectiveMetricValue",
                float,
            )
        )
    seed = config.get("RandomSeed")
    seed = DEFAULT_SEED if seed is None else int(_number(seed, f"{CONFIG}.RandomSeed", int))
    parallel = max(1, min(parallel, max_jobs, cores or os.cpu_count() or 1))
    return Plan(
        strategy, objective_type, metric, params, max_jobs, parallel, early, seed, dict(definition), key,
        target, hyperband,
    )  # fmt: skip


def trial_request(definition: Mapping[str, Any], tuned: Mapping[str, str]) -> dict[str, Any]:
    """The CreateTrainingJob request of one trial: the definition, its static and tuned hyperparameters."""
    request = {k: v for k, v in definition.items() if k not in _TUNING_ONLY}
    if "ResourceConfig" not in request and isinstance(
        definition.get("HyperParameterTuningResourceConfig"), Mapping
    ):
        hp_resource = dict(definition["HyperParameterTuningResourceConfig"])
        configs = hp_resource.pop("InstanceConfigs", None) or []
        hp_resource.pop("AllocationStrategy", None)
        if not hp_resource.get("InstanceType") and configs:
            hp_resource.update(configs[0])
        request["ResourceConfig"] = hp_resource
    static = definition.get("StaticHyperParameters") or {}
    request["HyperParameters"] = {**{k: str(v) for k, v in static.items()}, **tuned}
    return request


def tuning_job_name(execution_id: str, step: str) -> str:
    """At most 32 characters, as SageMaker allows: the step's name and a digest of execution and step."""
    digest = hashlib.sha256(f"{execution_id}/{step}".encode()).hexdigest()[:8]
    base = re.sub(r"[^A-Za-z0-9-]", "-", step)[:23].strip("-") or "tuning"
    return f"{base}-{digest}"


def trial_job_name(tuning_name: str, number: int) -> str:
    """``<tuning-job-name>-NNN-<hash>``, as SageMaker names a tuning job's training jobs."""
    digest = hashlib.sha256(f"{tuning_name}/{number}".encode()).hexdigest()[:8]
    return f"{tuning_name}-{number:03d}-{digest}"


# ---------------------------------------------------------------------------------------------- trials


class _Cancel(threading.Event):
    """A trial's stop: set for this trial (pruned) or for the whole execution."""

    def __init__(self, parent: threading.Event):
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return super().is_set() or self.parent.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        step = 0.2 if timeout is None else min(0.2, timeout)
        waited = 0.0
        while not self.is_set():
            if timeout is not None and waited >= timeout:
                return False
            super().wait(step)
            waited += step
        return True


@dataclass
class Trial:
    number: int
    name: str
    tuned: dict[str, str]
    status: str = "InProgress"  # TrainingJobStatus: Completed | Failed | Stopped
    reason: str | None = None
    objective: float | None = None
    pruned: bool = False
    created: str = field(default_factory=_now)
    started: str | None = None
    ended: str | None = None
    arn: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    log_paths: list[str] = field(default_factory=list)
    history: list[float] = field(default_factory=list)

    @property
    def objective_status(self) -> str:
        return "Succeeded" if self.objective is not None else "Failed" if self.ended else "Pending"

    def summary(self, tuning_name: str, plan: Plan) -> dict[str, Any]:
        out: dict[str, Any] = {
            "TrainingJobName": self.name,
            "TrainingJobArn": self.arn,
            "TuningJobName": tuning_name,
            "CreationTime": self.created,
            "TrainingStartTime": self.started,
            "TrainingEndTime": self.ended,
            "TrainingJobStatus": self.status,
            "TunedHyperParameters": dict(self.tuned),
            "ObjectiveStatus": self.objective_status,
        }
        if plan.definition.get("DefinitionName"):
            out["TrainingJobDefinitionName"] = plan.definition["DefinitionName"]
        if self.objective is not None:
            out["FinalHyperParameterTuningJobObjectiveMetric"] = {
                "Type": plan.objective_type,
                "MetricName": plan.metric,
                "Value": self.objective,
            }
        if self.reason and self.status != "Completed":
            out["FailureReason"] = self.reason
        return out


class TuningHandler(TrainingHandler):
    kind = "Tuning"

    # ------------------------------------------------------------------------------------------ check

    def describe(self, step, images):
        from mlops.local.check import StepView

        args = step.spec.get("Arguments")
        args = args if isinstance(args, Mapping) else {}
        try:
            plan = parse_plan(args)
        except _Deferred as deferred:
            return StepView(
                step.name, step.type, runtime=f"decided at run time ({deferred} is an expression)"
            )
        except DefinitionError as err:
            return StepView(step.name, step.type, runtime="(refused)", blockers=[str(err)])
        # The trials' image and launch, as a Training step with the definition's request would have them.
        trial = trial_request(plan.definition, {p.name: p.hyperparameter(_first(p)) for p in plan.params})
        view = super().describe(
            SimpleNamespace(name=step.name, type="Training", spec={"Arguments": trial}), images
        )
        view.runtime = (
            f"{plan.strategy} search (optuna), {plan.max_jobs} training jobs, {plan.parallel} at a time: "
            f"{view.runtime}"
        )
        return view

    # ---------------------------------------------------------------------------------------- outputs

    def output_uris(self, props: Mapping[str, Any]) -> list[str]:
        definition = props.get("TrainingJobDefinition") or (props.get("TrainingJobDefinitions") or [{}])[0]
        root = ((definition or {}).get("OutputDataConfig") or {}).get("S3OutputPath", "").rstrip("/")
        return [
            f"{root}/{s['TrainingJobName']}/output/model.tar.gz"
            for s in props.get("TrainingJobSummaries") or []
            if s.get("TrainingJobStatus") == "Completed" and root
        ]

    # ------------------------------------------------------------------------------------------- run

    def attempts(self, step, request: dict[str, Any], name: str, key: str | None, execution) -> Outcome:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            plan = parse_plan(request)
        except _Deferred as deferred:  # resolved already: an expression that resolved to one
            raise DefinitionError(f"step {step.name}: {deferred} did not resolve") from None
        attempt = int(getattr(execution, "previous_attempts", {}).get(step.name) or 0) + 1
        base_dir = execution.home.execution_dir(execution.execution_id) / step.name / f"attempt-{attempt}"
        execution.save(step.name, attempts=attempt, job_dir=str(base_dir))
        tuning_name = tuning_job_name(execution.execution_id, step.name)
        created = _now()
        study = optuna.create_study(
            direction="minimize" if plan.objective_type == "Minimize" else "maximize",
            sampler=plan.sampler(),
            pruner=plan.pruner(),
            study_name=tuning_name,
        )
        distributions = {p.name: p.distribution() for p in plan.params}
        runner = self.runner_for(execution)
        trials: list[Trial] = []
        lock = threading.Lock()
        done = threading.Event()  # the target objective was reached: launch no more

        def next_trial():
            with lock:
                if len(trials) >= plan.max_jobs or done.is_set() or execution.stop.is_set():
                    return None
                ask = study.ask(distributions)
                number = len(trials) + 1
                tuned = {p.name: p.hyperparameter(ask.params[p.name]) for p in plan.params}
                trial = Trial(number, trial_job_name(tuning_name, number), tuned)
                trials.append(trial)
                return ask, trial

        def worker():
            while (nxt := next_trial()) is not None:
                ask, trial = nxt
                self.run_trial(step, plan, ask, trial, study, runner, base_dir, execution, lock)
                if trial.objective is not None and plan.reached(trial.objective):
                    done.set()

        with ThreadPoolExecutor(plan.parallel, thread_name_prefix=f"tuning-{step.name}") as pool:
            for future in [pool.submit(worker) for _ in range(plan.parallel)]:
                future.result()
        return self.outcome(
            step, plan, request, tuning_name, created, trials, key, attempt, base_dir, execution
        )

    def run_trial(
        self, step, plan: Plan, ask, trial: Trial, study, runner, base_dir, execution, lock
    ) -> None:
        import optuna

        request = trial_request(plan.definition, trial.tuned)
        trial.arn = arns.job_arn(request, "training-job", trial.name)
        cancel = _Cancel(execution.stop)
        rule = _objective_rule(request, plan.metric)

        def on_log(host: str, line: str) -> None:
            execution.emit("log", step.name, message=f"[{trial.name}/{host}] {line}")
            if rule is None or cancel.is_set():
                return
            m = rule.search(line)
            if not m:
                return
            try:
                value = float(m.group(1) if m.groups() else m.group(0))
            except (TypeError, ValueError):
                return
            trial.history.append(value)
            ask.report(value, len(trial.history))
            if ask.should_prune():
                trial.pruned = True
                execution.emit(
                    "log",
                    step.name,
                    message=f"[{trial.name}] stopped early at {value} (step {len(trial.history)})",
                )
                cancel.set()

        trial.started = _now()
        execution.emit("log", step.name, message=f"[{trial.name}] started: {trial.tuned}")
        status, reason, result, _fault = self.call_runner(
            runner, request, job_name=trial.name, job_dir=base_dir / trial.name, execution=execution,
            on_log=on_log, cancel=cancel, step_name=step.name,
        )  # fmt: skip
        trial.ended = _now()
        trial.status, trial.reason = status, reason
        trial.log_paths = [str(p) for p in (getattr(result, "log_paths", None) or [])]
        trial.metrics = {k: float(v) for k, v in (getattr(result, "metrics", None) or {}).items()}
        if status == "Completed" or (status == "Stopped" and trial.pruned):
            trial.objective = trial.metrics.get(plan.metric)
            if trial.objective is None and trial.history:
                trial.objective = trial.history[-1]
        if status == "Completed" and trial.objective is None:
            trial.reason = (
                f"the objective metric {plan.metric!r} was never logged "
                f"(no line matched its MetricDefinitions regex)"
            )
        with lock:
            if trial.pruned:
                study.tell(ask, state=optuna.trial.TrialState.PRUNED)
            elif trial.objective is not None:
                study.tell(ask, trial.objective)
            else:
                study.tell(ask, state=optuna.trial.TrialState.FAIL)
        _write_record(base_dir / trial.name, trial, plan)
        execution.emit(
            "log", step.name, message=f"[{trial.name}] {trial.status}: {plan.metric}={trial.objective}"
        )

    def outcome(self, step, plan, request, tuning_name, created, trials, key, attempt, base_dir, execution):
        scored = sorted((t for t in trials if t.objective is not None), key=lambda t: t.objective,
                        reverse=plan.objective_type == "Maximize")  # fmt: skip
        unscored = [t for t in trials if t.objective is None]
        summaries = [t.summary(tuning_name, plan) for t in scored + unscored]
        counters = {
            "Completed": 0,
            "InProgress": 0,
            "RetryableError": 0,
            "NonRetryableError": 0,
            "Stopped": 0,
        }
        for t in trials:
            counters["NonRetryableError" if t.status == "Failed" else t.status] += 1
        objective_counters = {"Succeeded": len(scored), "Pending": 0, "Failed": len(unscored)}
        stopped = execution.stop.is_set()
        status = "Stopped" if stopped else "Completed" if scored else "Failed"
        ended = _now()
        props: dict[str, Any] = {
            "HyperParameterTuningJobName": tuning_name,
            "HyperParameterTuningJobArn": arns.job_arn(request, "hyper-parameter-tuning-job", tuning_name),
            **{k: v for k, v in request.items()},
            "HyperParameterTuningJobStatus": status,
            "CreationTime": created,
            "HyperParameterTuningEndTime": ended,
            "LastModifiedTime": ended,
            "TrainingJobStatusCounters": counters,
            "ObjectiveStatusCounters": objective_counters,
            "TrainingJobSummaries": summaries,
            "TuningJobCompletionDetails": {
                "NumberOfTrainingJobsObjectiveNotImproving": _not_improving(trials, plan),
            },
        }
        if scored:
            props["BestTrainingJob"] = scored[0].summary(tuning_name, plan)
        logs = [p for t in trials for p in t.log_paths]
        fields = dict(log_paths=logs, attempts=attempt, job_dir=str(base_dir))
        if stopped:
            return Outcome(StepStatus.STOPPED, props, failure_reason="stopped", **fields)
        if not scored:
            first = trials[0] if trials else None
            why = f"{first.name}: {first.reason or first.status}" if first else "no training job ran"
            reason = (
                f"every training job of tuning job {tuning_name} failed ({len(trials)}); the first, {why}"
            )
            props["FailureReason"] = reason
            return Outcome.failed(" ".join(reason.split()), properties=props, **fields)
        return Outcome.succeeded(props, metrics=dict(scored[0].metrics), cache_key=key, **fields)


def _first(p: Param) -> Any:
    return p.values[0] if p.kind == "categorical" else (1.0 - p.high if p.reverse else p.low)


def _objective_rule(request: Mapping[str, Any], metric: str) -> re.Pattern | None:
    """The objective's regex, for intermediate values (the request's MetricDefinitions or the algorithm's)."""
    from mlops.local.images.launch import ImageLaunchError, training_launch

    algo = request.get("AlgorithmSpecification") or {}
    definitions = algo.get("MetricDefinitions") or []
    if not definitions:
        try:
            definitions = training_launch(
                dict(algo), dict(request.get("HyperParameters") or {})
            ).metric_definitions
        except ImageLaunchError:
            definitions = []
    for d in definitions or []:
        if isinstance(d, Mapping) and d.get("Name") == metric:
            try:
                return re.compile(d["Regex"])
            except (KeyError, TypeError, re.error):
                return None
    return None


def _not_improving(trials: list[Trial], plan: Plan) -> int:
    best, since = None, 0
    for t in sorted(trials, key=lambda t: t.number):
        if t.objective is not None and (best is None or plan.better(t.objective, best)):
            best, since = t.objective, 0
        else:
            since += 1
    return since


def _write_record(job_dir, trial: Trial, plan: Plan) -> None:
    import json

    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        record = {**trial.summary("", plan), "Metrics": trial.metrics, "ObjectiveHistory": trial.history,
                  "LogPaths": trial.log_paths}  # fmt: skip
        record.pop("TuningJobName", None)
        (job_dir / "trial.json").write_text(json.dumps(record, indent=2))
    except OSError:
        log.debug("cannot write the record of %s", trial.name, exc_info=True)
