"""The project's typed configuration: the toolkit's sections (mlops.config.BaseConfig) plus this project's.

The schema is the documentation: every field has a description, and ``mlops config --reference`` renders
them into the README.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mlops import config as base
from mlops.config import INSTANCE_TYPE, NAME, S3_URI, Strict, _match, project_root


class Image(Strict):
    framework: Annotated[Literal["pytorch", "sklearn"], Field(description="SageMaker framework image.")]
    version: Annotated[str, Field(description="Framework version of the image (e.g. 2.5).")]
    py_version: Annotated[str, Field(description="Python version tag of the image (e.g. py311).")]


class Instances(Strict):
    instance_type: Annotated[str, Field(description="Instance type (ml.*).")]
    instance_count: Annotated[int, Field(ge=1, le=100, description="Number of instances.")] = 1
    volume_size_gb: Annotated[int, Field(ge=1, le=16384, description="Storage volume per instance, GB.")] = 30
    max_runtime_s: Annotated[int, Field(ge=60, le=432000, description="Stopping condition, seconds.")] = 3600

    _type = field_validator("instance_type")(_match(INSTANCE_TYPE, "instance type"))


class Spot(Strict):
    enabled: Annotated[bool, Field(description="Use managed spot training.")] = False
    max_wait_s: Annotated[
        int, Field(ge=60, description="Max wait incl. spot interruptions; >= max_runtime_s.")
    ] = 7200
    checkpoint_s3_uri: Annotated[
        str | None, Field(description="Where checkpoints sync to (default: <s3_root>/checkpoints).")
    ] = None

    _uri = field_validator("checkpoint_s3_uri")(_match(S3_URI, "S3 URI"))


class Hyperparameters(Strict):
    epochs: Annotated[int, Field(ge=1, le=1000, description="Training epochs.")] = 20
    batch_size: Annotated[int, Field(ge=1, le=65536, description="Per-process mini-batch size.")] = 64
    learning_rate: Annotated[float, Field(gt=0, le=10, description="Adam learning rate.")] = 0.003
    hidden_units: Annotated[int, Field(ge=1, le=8192, description="Width of the hidden layers.")] = 128
    seed: Annotated[int, Field(ge=0, description="Random seed (weights, shuffling).")] = 7


class Training(Instances):
    image: Annotated[Image, Field(description="Training image.")]
    spot: Annotated[Spot, Field(description="Managed spot training.")] = Spot()
    hyperparameters: Annotated[Hyperparameters, Field(description="Hyperparameters passed to train.py.")] = (
        Hyperparameters()
    )
    processes_per_host: Annotated[int, Field(ge=1, le=64, description="torchrun processes per instance.")] = 1
    inter_container_traffic_encryption: Annotated[
        bool,
        Field(
            description="Encrypt traffic between training hosts "
            "(CreateTrainingJob EnableInterContainerTrafficEncryption; slower multi-host training)."
        ),
    ] = False

    @model_validator(mode="after")
    def _spot_wait(self):
        if self.spot.enabled and self.spot.max_wait_s < self.max_runtime_s:
            raise ValueError(
                f"spot.max_wait_s must be >= max_runtime_s ({self.spot.max_wait_s} < {self.max_runtime_s})"
            )
        return self


class Processing(Instances):
    image: Annotated[Image, Field(description="Processing image.")]


class Split(Strict):
    train: Annotated[float, Field(gt=0, lt=1, description="Share of rows for training.")] = 0.7
    validation: Annotated[float, Field(gt=0, lt=1, description="Share of rows for validation.")] = 0.15
    test: Annotated[float, Field(gt=0, lt=1, description="Share of rows for the test split.")] = 0.15
    seed: Annotated[int, Field(ge=0, description="Seed of the deterministic split.")] = 42

    @model_validator(mode="after")
    def _sums_to_one(self):
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + test must be 1 (got {total:g})")
        return self


class Data(Strict):
    input_uri: Annotated[str, Field(description="S3 prefix of the raw CSV files (64 pixel columns + label).")]
    expectation_suite: Annotated[str, Field(description="great-expectations suite, relative to the repo.")]
    split: Annotated[Split, Field(description="Deterministic train/validation/test split.")] = Split()

    _uri = field_validator("input_uri")(_match(S3_URI, "S3 URI"))

    @field_validator("expectation_suite")
    @classmethod
    def _suite_exists(cls, v: str, info: ValidationInfo):
        root = project_root(info).resolve()
        path = (root / v).resolve()
        if not path.is_relative_to(root):
            raise ValueError(f"must be a file inside the project (got {v!r})")
        if not path.is_file():
            raise ValueError(f"file not found: {v}")
        _check_suite(path, v)
        return v


SUITE_KEYS = {"name", "expectations"}
SUITE_ENTRY_KEYS = {"type", "kwargs", "column", "columns", "splits", "meta"}  # code/validate.py's ENTRY_KEYS
SUITE_SPLITS = ("train", "validation", "test")


def _check_suite(path, shown: str) -> None:
    """The structure steps/validate_data/code/validate.py reads (checked here, at config time, rather than in
    the container after preprocessing ran): a YAML mapping with a non-empty ``expectations`` list of entries,
    each a mapping with a GX ``type`` (expect_*), ``kwargs`` a mapping and ``splits`` a list of split names."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{shown}: cannot read the suite ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", None) or err).split())
        raise ValueError(f"{shown}: not valid YAML{where}: {problem}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("expectations"), list) or not doc["expectations"]:
        raise ValueError(f"{shown}: expected a mapping with a non-empty 'expectations' list")
    if set(doc) - SUITE_KEYS:
        raise ValueError(f"{shown}: unknown top-level key(s) {sorted(map(str, set(doc) - SUITE_KEYS))}")
    for index, entry in enumerate(doc["expectations"]):
        where = f"{shown}: entry {index}"
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise ValueError(f"{where}: expected a mapping with a 'type'")
        if not entry["type"].startswith("expect_"):
            raise ValueError(f"{where}: {entry['type']!r} is not a great-expectations expectation (expect_*)")
        if set(entry) - SUITE_ENTRY_KEYS:
            raise ValueError(f"{where}: unknown key(s) {sorted(map(str, set(entry) - SUITE_ENTRY_KEYS))}")
        if not isinstance(entry.get("kwargs") or {}, dict):
            raise ValueError(f"{where} ({entry['type']}): 'kwargs' must be a mapping")
        splits = entry.get("splits")
        if splits is not None and (
            not isinstance(splits, list) or not splits or not set(splits) <= set(SUITE_SPLITS)
        ):
            raise ValueError(
                f"{where} ({entry['type']}): 'splits' must be a non-empty list of {list(SUITE_SPLITS)}"
            )


class Evaluation(Strict):
    metric: Annotated[
        Literal["accuracy", "weighted_f1", "weighted_precision", "weighted_recall"],
        Field(description="Metric in evaluation.json that gates registration."),
    ] = "accuracy"
    threshold: Annotated[float, Field(ge=0, le=1, description="Register only when metric >= threshold.")] = (
        0.9
    )


class Registry(base.Registry):
    inference_image: Annotated[Image, Field(description="Serving image of registered versions.")]
    inference_instance_types: Annotated[
        list[str], Field(min_length=1, description="Allowed real-time instances.")
    ]
    content_types: Annotated[
        list[str], Field(min_length=1, description="Accepted request content types.")
    ] = [
        "application/json",
        "text/csv",
    ]
    response_types: Annotated[list[str], Field(min_length=1, description="Response content types.")] = [
        "application/json"
    ]

    @field_validator("inference_instance_types")
    @classmethod
    def _types(cls, v):
        for t in v:
            _match(INSTANCE_TYPE, "instance type")(t)
        return v


class Autoscaling(Strict):
    min_capacity: Annotated[int, Field(ge=1, description="Minimum instances.")] = 1
    max_capacity: Annotated[int, Field(ge=1, description="Maximum instances.")] = 1
    target_invocations_per_instance: Annotated[
        float, Field(gt=0, description="Target tracking on SageMakerVariantInvocationsPerInstance.")
    ] = 100.0
    scale_in_cooldown_s: Annotated[int, Field(ge=0, description="Scale-in cooldown.")] = 300
    scale_out_cooldown_s: Annotated[int, Field(ge=0, description="Scale-out cooldown.")] = 60

    @model_validator(mode="after")
    def _order(self):
        if self.max_capacity < self.min_capacity:
            raise ValueError(
                f"max_capacity must be >= min_capacity ({self.max_capacity} < {self.min_capacity})"
            )
        return self


class BlueGreen(Strict):
    type: Annotated[
        Literal["ALL_AT_ONCE", "CANARY", "LINEAR"], Field(description="Traffic shifting mode.")
    ] = "CANARY"
    step_percent: Annotated[
        int, Field(ge=1, le=100, description="Canary size or linear step, % of capacity.")
    ] = 10
    wait_s: Annotated[int, Field(ge=0, le=3600, description="Wait between traffic shifts.")] = 300
    termination_wait_s: Annotated[int, Field(ge=0, le=3600, description="Keep the old fleet this long.")] = (
        300
    )


class RollbackAlarms(Strict):
    max_5xx_rate: Annotated[float, Field(gt=0, le=1, description="Roll back above this share of 5xx.")] = 0.01
    max_model_latency_ms: Annotated[
        float, Field(gt=0, description="Roll back above this p99 model latency.")
    ] = 500
    evaluation_periods: Annotated[
        int, Field(ge=1, le=10, description="Alarm evaluation periods (1 min).")
    ] = 2


class AsyncInference(Strict):
    max_concurrent_invocations: Annotated[
        int, Field(ge=1, le=1000, description="MaxConcurrentInvocationsPerInstance of the async queue.")
    ] = 4
    success_topic: Annotated[str | None, Field(description="SNS topic ARN told of each answer.")] = None
    error_topic: Annotated[str | None, Field(description="SNS topic ARN told of each failure.")] = None


class Endpoint(Strict):
    instance_type: Annotated[str, Field(description="Endpoint instance type.")]
    mode: Annotated[
        Literal["real-time", "async", "multi-model"],
        Field(
            description="Hosting mode: real-time, async (InvokeEndpointAsync; asynchronous settings alone "
            "mean async too) or multi-model (TargetModel v<version>.tar.gz under <s3_root>/multi-model/<group>/)."
        ),
    ] = "real-time"
    asynchronous: Annotated[
        AsyncInference | None,
        Field(
            description="Asynchronous inference (InvokeEndpointAsync; answers under <s3_root>/async/<stage>/)."
        ),
    ] = None
    instance_count: Annotated[int, Field(ge=1, le=100, description="Initial instance count.")] = 1
    autoscaling: Annotated[Autoscaling | None, Field(description="Target-tracking autoscaling.")] = None
    blue_green: Annotated[BlueGreen | None, Field(description="Blue/green traffic shifting.")] = None
    rollback_alarms: Annotated[RollbackAlarms | None, Field(description="Alarms that roll back.")] = None
    data_capture_percent: Annotated[int, Field(ge=0, le=100, description="Share of requests captured.")] = 0
    local_port: Annotated[int, Field(ge=1024, le=65535, description="Port of the local endpoint.")] = 8080

    _type = field_validator("instance_type")(_match(INSTANCE_TYPE, "instance type"))

    @model_validator(mode="before")
    @classmethod
    def _mode_of_settings(cls, data):
        """``asynchronous`` alone still means async; ``mode: async`` alone takes the default settings."""
        if isinstance(data, dict):
            if data.get("mode") is None:
                data = {**data, "mode": "async" if data.get("asynchronous") is not None else "real-time"}
            elif data.get("mode") == "async" and data.get("asynchronous") is None:
                data = {**data, "asynchronous": {}}
        return data

    @field_validator("asynchronous")
    @classmethod
    def _async_needs_async_mode(cls, v, info: ValidationInfo):
        mode = info.data.get("mode")
        if v is not None and mode in ("real-time", "multi-model"):
            raise ValueError(f"mode {mode} takes no asynchronous settings (remove them, or set mode: async)")
        return v


class SmokeTest(Strict):
    samples: Annotated[int, Field(ge=1, le=10000, description="Test-split rows sent to staging.")] = 100
    min_accuracy: Annotated[float, Field(ge=0, le=1, description="Accuracy floor of the smoke test.")] = 0.85
    max_p95_latency_ms: Annotated[float, Field(gt=0, description="p95 latency ceiling, ms.")] = 200


class PromotionGate(Strict):
    enabled: Annotated[
        bool,
        Field(
            description="A person promotes staging to production (mlops models promote); "
            "off: production follows the smoke test."
        ),
    ] = True


class Endpoints(Strict):
    staging: Annotated[Endpoint, Field(description="Staging endpoint.")]
    production: Annotated[Endpoint, Field(description="Production endpoint.")]
    smoke_test: Annotated[SmokeTest, Field(description="Checks between staging and production.")] = (
        SmokeTest()
    )
    promotion_gate: Annotated[
        PromotionGate,
        Field(description="The wait for a person between staging and production (a Callback step)."),
    ] = PromotionGate()


class Steps(Strict):
    preprocess: Annotated[Processing, Field(description="Preprocess (clean + split) job.")]
    validate_data: Annotated[Processing, Field(description="great-expectations data-quality job.")]
    train: Annotated[Training, Field(description="Distributed PyTorch training job.")]
    evaluate: Annotated[Processing, Field(description="Evaluation job.")]


JSON = "application/json"


def _key_prefix(value: str) -> str:
    """A key prefix below ``aws.s3_root``: no leading or trailing '/', no empty, '.' or '..' segment."""
    if (
        not value
        or value.startswith("/")
        or value.endswith("/")
        or any(part in ("", ".", "..") for part in value.split("/"))
    ):
        raise ValueError(
            f"must be a key prefix below aws.prefix without leading or trailing '/' or '.'/'..' segments "
            f"(got {value!r})"
        )
    return value


class Transform(Strict):
    """CreateTransformJob's batch settings. SplitType and AssembleWith are Line (one CSV row per line in,
    one answer per line out): the model server's payload contract, not a per-environment choice."""

    instance_type: Annotated[str, Field(description="Transform instance type (ml.*).")]
    instance_count: Annotated[
        int, Field(ge=1, le=100, description="Transform instances; whole input files are spread over them.")
    ] = 1
    batch_strategy: Annotated[
        Literal["SingleRecord", "MultiRecord"],
        Field(
            description="SingleRecord: one row per request, so each .out line is the prediction of the input "
            "line at the same position; MultiRecord: mini-batches of up to max_payload_mb, one .out line "
            "(a predictions list) per mini-batch."
        ),
    ] = "SingleRecord"
    max_payload_mb: Annotated[int, Field(ge=1, le=100, description="MaxPayloadInMB of one request.")] = 6
    max_concurrent_transforms: Annotated[
        int, Field(ge=1, le=100, description="Requests in flight per instance (MaxConcurrentTransforms).")
    ] = 2
    content_type: Annotated[
        str, Field(description="ContentType of the input rows; one of registry.content_types.")
    ] = "text/csv"
    accept: Annotated[str, Field(description="Accept of the answers; one of registry.response_types.")] = JSON
    join_source: Annotated[
        Literal["None", "Input"],
        Field(
            description="Input: each output line holds its input row (SageMakerInput) beside the prediction "
            "(SageMakerOutput); needs JSON input rows and SingleRecord, since the model answers JSON."
        ),
    ] = "None"
    invocations_timeout_s: Annotated[
        int, Field(ge=1, le=3600, description="ModelClientConfig.InvocationsTimeoutInSeconds per request.")
    ] = 600

    _type = field_validator("instance_type")(_match(INSTANCE_TYPE, "instance type"))

    @model_validator(mode="after")
    def _limits(self):
        if self.max_payload_mb * self.max_concurrent_transforms > 100:
            raise ValueError(
                "max_payload_mb x max_concurrent_transforms must be <= 100 (SageMaker's limit; got "
                f"{self.max_payload_mb} x {self.max_concurrent_transforms})"
            )
        if self.join_source == "Input" and (
            self.content_type != JSON or self.batch_strategy != "SingleRecord"
        ):
            raise ValueError(
                f"join_source Input needs content_type {JSON} (the model answers JSON, which cannot be "
                f"joined to a CSV row) and batch_strategy SingleRecord (one answer per input row); got "
                f"{self.content_type}, {self.batch_strategy}"
            )
        return self


class ScoreSchedule(base.Schedule):
    enabled: Annotated[bool, Field(description="Create the batch-scoring schedule.")] = True


class BatchScore(Strict):
    pipeline_name: Annotated[str, Field(description="Name of the batch-score pipeline.")]
    input_prefix: Annotated[
        str,
        Field(
            description="Key prefix below aws.bucket/aws.prefix of the files a run scores by default "
            "(InputDataUri): CSV rows of 64 pixel values, no header, no label."
        ),
    ] = "batch-score/input"
    output_prefix: Annotated[
        str,
        Field(
            description="Key prefix below aws.bucket/aws.prefix of the results (OutputUri): each run writes "
            "<OutputUri>/<execution id>/predictions/<file>.out and .../summary/summary.json."
        ),
    ] = "batch-score/output"
    transform: Annotated[Transform, Field(description="The batch transform job.")]
    job: Annotated[
        Processing,
        Field(description="The two small jobs: resolve the latest Approved version, summarise the run."),
    ]
    schedule: Annotated[
        ScoreSchedule, Field(description="EventBridge Scheduler schedule that starts the pipeline.")
    ]

    _name = field_validator("pipeline_name")(
        _match(NAME, "SageMaker name (letters, digits and '-', at most 63)")
    )
    _prefixes = field_validator("input_prefix", "output_prefix")(_key_prefix)


class Config(base.BaseConfig):
    data: Data
    steps: Steps
    evaluation: Evaluation = Evaluation()
    registry: Registry
    endpoints: Endpoints
    batch_score: Annotated[BatchScore, Field(description="The batch-score pipeline.")]

    @field_validator("batch_score")
    @classmethod
    def _served_types(cls, v: BatchScore, info: ValidationInfo):
        registry = info.data.get("registry")
        if registry is None:  # its own error is reported
            return v
        for key, value, allowed in (
            ("content_type", v.transform.content_type, registry.content_types),
            ("accept", v.transform.accept, registry.response_types),
        ):
            if value not in allowed:
                kind = "content_types" if key == "content_type" else "response_types"
                raise ValueError(
                    f"transform.{key} {value!r} is not one the model serves (registry.{kind}: {allowed})"
                )
        return v

    def infra_parameters(self) -> dict[str, str]:
        """infra/mlops.yaml's batch-score schedule parameters."""
        schedule = self.batch_score.schedule
        return {
            "BatchScorePipelineName": self.batch_score.pipeline_name,
            "BatchScoreScheduleExpression": schedule.cron,
            "BatchScoreScheduleTimezone": schedule.timezone,
            "BatchScoreScheduleState": "ENABLED" if schedule.enabled else "DISABLED",
            "BatchScoreFlexibleWindowMinutes": str(schedule.flexible_window_minutes),
        }
