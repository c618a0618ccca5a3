"""Typed configuration: ``config/base.yaml`` + ``config/<env>.yaml`` + ``MLOPS__SECTION__KEY`` variables.

The schema is the documentation: every field has a description, and ``mlops config-reference`` renders
them into the README. Every error names the file, the dotted key and the reason, on one line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops._root import PROJECT_ROOT
from mlops.errors import ConfigError

ENV_PREFIX = "MLOPS__"
ARN_ROLE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
ARN_KMS = re.compile(
    r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:(key|alias)/[\w/-]+|alias/[\w/-]+|[0-9a-f-]{36})$"
)
S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d$")
INSTANCE_TYPE = re.compile(r"^(ml|local)\.[a-z0-9-]+\.[a-z0-9]+$")
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
SUBNET = re.compile(r"^subnet-[0-9a-f]{8,17}$")
SECURITY_GROUP = re.compile(r"^sg-[0-9a-f]{8,17}$")
# EventBridge Scheduler cron: six fields, one of day-of-month / day-of-week must be '?'.
CRON = re.compile(r"^cron\(\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s*\)$")
CRON_FIELD = re.compile(r"^[0-9A-Za-z*?,/#L W-]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _match(pattern: re.Pattern, what: str):
    def check(value):
        if value is not None and not pattern.match(value):
            raise ValueError(f"not a valid {what} (got {value!r})")
        return value

    return check


class Project(Strict):
    name: Annotated[str, Field(description="Project name; prefixes pipeline, endpoint and resource names.")]
    build_pipeline: Annotated[str, Field(description="Name of the model-build pipeline.")]
    deploy_pipeline: Annotated[str, Field(description="Name of the model-deploy pipeline.")]
    description: Annotated[str, Field(description="Description stored with the pipelines.")] = ""

    _names = field_validator("name", "build_pipeline", "deploy_pipeline")(
        _match(NAME, "SageMaker name (letters, digits and '-', at most 63)")
    )


class Network(Strict):
    subnets: Annotated[
        list[str], Field(description="VPC subnet ids for jobs and endpoints (empty: no VPC).")
    ] = []
    security_group_ids: Annotated[
        list[str], Field(description="Security group ids used with the subnets.")
    ] = []

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, v):
        for s in v:
            _match(SUBNET, "subnet id")(s)
        return v

    @field_validator("security_group_ids")
    @classmethod
    def _groups(cls, v):
        for s in v:
            _match(SECURITY_GROUP, "security group id")(s)
        return v

    @model_validator(mode="after")
    def _both_or_neither(self):
        if bool(self.subnets) != bool(self.security_group_ids):
            raise ValueError("subnets and security_group_ids must be given together")
        return self


class Aws(Strict):
    region: Annotated[str, Field(description="AWS region of every resource.")]
    role_arn: Annotated[
        str, Field(description="SageMaker execution role ARN that jobs and pipelines assume.")
    ]
    bucket: Annotated[str, Field(description="Artifact bucket for code bundles, data and model artifacts.")]
    prefix: Annotated[
        str, Field(description="Key prefix inside the bucket for this project and environment.")
    ]
    kms_key_id: Annotated[
        str | None, Field(description="KMS key (ARN, alias or id) for volumes, outputs and endpoints.")
    ] = None
    network: Annotated[Network, Field(description="Optional VPC placement.")] = Network()
    tags: Annotated[dict[str, str], Field(description="Tags on pipelines, jobs, models and endpoints.")] = {}

    _region = field_validator("region")(_match(REGION, "AWS region"))
    _role = field_validator("role_arn")(_match(ARN_ROLE, "IAM role ARN"))
    _bucket = field_validator("bucket")(_match(BUCKET, "S3 bucket name"))
    _kms = field_validator("kms_key_id")(_match(ARN_KMS, "KMS key ARN, alias or id"))

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str):
        if v.startswith("/") or v.endswith("/") or "//" in v or not v:
            raise ValueError(f"must be a non-empty key prefix without leading or trailing '/' (got {v!r})")
        return v

    @property
    def s3_root(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


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
    def _suite_exists(cls, v: str):
        if not (PROJECT_ROOT / v).is_file():
            raise ValueError(f"file not found: {v}")
        return v


class Evaluation(Strict):
    metric: Annotated[
        Literal["accuracy", "weighted_f1", "weighted_precision", "weighted_recall"],
        Field(description="Metric in evaluation.json that gates registration."),
    ] = "accuracy"
    threshold: Annotated[float, Field(ge=0, le=1, description="Register only when metric >= threshold.")] = (
        0.9
    )


class Registry(Strict):
    model_package_group: Annotated[str, Field(description="Model package group of the versions.")]
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

    _group = field_validator("model_package_group")(_match(NAME, "model package group name"))

    @field_validator("inference_instance_types")
    @classmethod
    def _types(cls, v):
        for t in v:
            _match(INSTANCE_TYPE, "instance type")(t)
        return v


class Schedule(Strict):
    enabled: Annotated[bool, Field(description="Create the retraining schedule.")] = True
    cron: Annotated[
        str, Field(description="EventBridge Scheduler cron expression, e.g. cron(0 3 ? * MON *).")
    ]
    timezone: Annotated[str, Field(description="IANA time zone of the cron.")] = "UTC"
    flexible_window_minutes: Annotated[int, Field(ge=0, le=1440, description="0 turns the window off.")] = 15

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str):
        m = CRON.match(v)
        if not m or not all(CRON_FIELD.match(f) for f in m.groups()):
            raise ValueError(
                f"not a valid cron(min hour day-of-month month day-of-week year) expression (got {v!r})"
            )
        if "?" not in (m.group(3), m.group(5)):
            raise ValueError(f"day-of-month or day-of-week must be '?' (got {v!r})")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone (got {v!r})") from None
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


class Endpoint(Strict):
    instance_type: Annotated[str, Field(description="Endpoint instance type.")]
    instance_count: Annotated[int, Field(ge=1, le=100, description="Initial instance count.")] = 1
    autoscaling: Annotated[Autoscaling | None, Field(description="Target-tracking autoscaling.")] = None
    blue_green: Annotated[BlueGreen | None, Field(description="Blue/green traffic shifting.")] = None
    rollback_alarms: Annotated[RollbackAlarms | None, Field(description="Alarms that roll back.")] = None
    data_capture_percent: Annotated[int, Field(ge=0, le=100, description="Share of requests captured.")] = 0
    local_port: Annotated[int, Field(ge=1024, le=65535, description="Port of the local endpoint.")] = 8080

    _type = field_validator("instance_type")(_match(INSTANCE_TYPE, "instance type"))


class SmokeTest(Strict):
    samples: Annotated[int, Field(ge=1, le=10000, description="Test-split rows sent to staging.")] = 100
    min_accuracy: Annotated[float, Field(ge=0, le=1, description="Accuracy floor of the smoke test.")] = 0.85
    max_p95_latency_ms: Annotated[float, Field(gt=0, description="p95 latency ceiling, ms.")] = 200


class Endpoints(Strict):
    staging: Annotated[Endpoint, Field(description="Staging endpoint.")]
    production: Annotated[Endpoint, Field(description="Production endpoint.")]
    smoke_test: Annotated[SmokeTest, Field(description="Checks between staging and production.")] = (
        SmokeTest()
    )


class Retry(Strict):
    max_attempts: Annotated[
        int, Field(ge=1, le=20, description="Attempts on capacity/throttling errors.")
    ] = 3
    interval_s: Annotated[int, Field(ge=1, le=300, description="First retry delay.")] = 10
    backoff_rate: Annotated[float, Field(ge=1, le=10, description="Delay multiplier per attempt.")] = 2.0


class Cache(Strict):
    enabled: Annotated[bool, Field(description="Step caching for processing and training.")] = True
    expire_after: Annotated[str, Field(description="ISO 8601 duration, e.g. P30D.")] = "P30D"

    @field_validator("expire_after")
    @classmethod
    def _duration(cls, v):
        if not re.match(r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$", v):
            raise ValueError(f"not an ISO 8601 duration (got {v!r})")
        return v


class Steps(Strict):
    preprocess: Annotated[Processing, Field(description="Preprocess (clean + split) job.")]
    validate_data: Annotated[Processing, Field(description="great-expectations data-quality job.")]
    train: Annotated[Training, Field(description="Distributed PyTorch training job.")]
    evaluate: Annotated[Processing, Field(description="Evaluation job.")]


class Local(Strict):
    file_systems: Annotated[
        dict[str, str],
        Field(description="Local directories standing in for EFS / FSx file system ids (id -> path)."),
    ] = {}
    max_parallel_steps: Annotated[int, Field(ge=1, le=64, description="Steps run at once, at most.")] = 2


class Config(Strict):
    env: Annotated[str, Field(description="Environment name (set from the overlay file name).")]
    project: Project
    aws: Aws
    data: Data
    steps: Steps
    evaluation: Evaluation = Evaluation()
    registry: Registry
    schedule: Schedule
    endpoints: Endpoints
    retry: Retry = Retry()
    cache: Cache = Cache()
    local: Local = Local()


# ---------------------------------------------------------------------------------------------- loading


def config_dir() -> Path:
    return Path(os.environ.get("MLOPS_CONFIG_DIR", PROJECT_ROOT / "config"))


def environments(directory: Path | None = None) -> list[str]:
    directory = directory or config_dir()
    return sorted(p.stem for p in directory.glob("*.yaml") if p.stem != "base")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{_rel(path)}: file not found") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{_rel(path)}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{_rel(path)}: must be a mapping at the top level")
    return data


def _rel(path: Path) -> str:
    """The shortest honest name: relative to the working directory or the project, else absolute."""
    resolved = path.resolve()
    for base in (Path.cwd(), PROJECT_ROOT):
        try:
            return str(resolved.relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _merge(base: dict, overlay: dict, origin: dict, name: str, prefix: str = "") -> dict:
    """Deep-merge ``overlay`` into ``base``; record which source set each dotted key."""
    out = dict(base)
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, origin, name, dotted + ".")
        else:
            out[key] = value
            _mark(origin, dotted, value, name)
    return out


def _mark(origin: dict, dotted: str, value, name: str) -> None:
    origin[dotted] = name
    if isinstance(value, dict):
        for k, v in value.items():
            _mark(origin, f"{dotted}.{k}", v, name)


def _env_overrides(environ) -> tuple[dict, list[str]]:
    """``MLOPS__STEPS__TRAIN__INSTANCE_COUNT=2`` -> {"steps": {"train": {"instance_count": 2}}}."""
    tree: dict = {}
    names = []
    for var, raw in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX) or var == "MLOPS__":
            continue
        parts = [p.lower() for p in var[len(ENV_PREFIX) :].split("__")]
        node = tree
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"${var}: conflicts with another MLOPS__ variable")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            node[parts[-1]] = raw
        names.append(var)
    return tree, names


def _locate(origin: dict, dotted: str, default: str) -> str:
    """The file (or variable) that set ``dotted``; for a section-level error, the last layer that touched it."""
    below = [source for key, source in origin.items() if key == dotted or key.startswith(dotted + ".")]
    if below:
        return max(below, key=_layer)
    key = dotted
    while key:
        if key in origin:
            return origin[key]
        key = key.rpartition(".")[0]
    return default


def _layer(source: str) -> int:
    return 2 if source.startswith("$") else 0 if source.endswith("base.yaml") else 1


def _reason(err: dict) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[
            kind
        ]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound} (got {value!r})"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')} (got {value!r})"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be an integer (got {value!r})"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number (got {value!r})"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false (got {value!r})"
    if kind in ("string_type",):
        return f"must be a string (got {value!r})"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping (got {value!r})"
    if kind in ("list_type",):
        return f"must be a list (got {value!r})"
    if kind == "too_short":
        return "must not be empty"
    return f"{err['msg'].lower()} (got {value!r})"


def _dotted(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def load_config(env: str, directory: Path | None = None, environ=None) -> Config:
    """Load and validate ``base.yaml`` + ``<env>.yaml`` + ``MLOPS__*`` variables, or raise ConfigError."""
    directory = Path(directory or config_dir())
    environ = os.environ if environ is None else environ
    base_path = directory / "base.yaml"
    env_path = directory / f"{env}.yaml"
    if env == "base" or not env_path.is_file():
        known = ", ".join(environments(directory)) or "none"
        raise ConfigError(f"{_rel(env_path)}: unknown environment {env!r} (known: {known})")
    origin: dict[str, str] = {}
    base = _read_yaml(base_path)
    _mark_all(origin, base, _rel(base_path))
    merged = _merge(base, _read_yaml(env_path), origin, _rel(env_path))
    overrides, names = _env_overrides(environ)
    for var in names:
        dotted = ".".join(p.lower() for p in var[len(ENV_PREFIX) :].split("__"))
        origin[dotted] = f"${var}"
    merged = _merge(merged, overrides, {}, "")
    merged["env"] = env
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        dotted = _dotted(err["loc"])
        source = _locate(origin, dotted, _rel(env_path))
        raise ConfigError(f"{source}: {dotted}: {_reason(err)}") from None


def _mark_all(origin: dict, tree: dict, name: str, prefix: str = "") -> None:
    for key, value in tree.items():
        _mark(origin, f"{prefix}{key}", value, name)


def reference(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) rows for the README's config reference."""
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        ann = field.annotation
        sub = _submodel(ann)
        if sub is not None:
            if field.description:
                rows.append((dotted, "section", "", field.description))
            rows.extend(reference(sub, dotted + "."))
            continue
        default = "(required)" if field.is_required() else repr(field.default)
        rows.append((dotted, _type_name(ann), default, field.description or ""))
    return rows


def _submodel(ann):
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in getattr(ann, "__args__", ()) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _type_name(ann) -> str:
    return getattr(ann, "__name__", None) if isinstance(ann, type) else str(ann).replace("typing.", "")
