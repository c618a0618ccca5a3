"""Typed configuration: ``config/base.yaml`` + ``config/<env>.yaml`` + ``MLOPS__SECTION__KEY`` variables.

The schema is the documentation: every field has a description, and ``mlops config-reference`` renders
them into the README. Every error names the file, the dotted key and the reason, on one line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

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


# A local Lambda handler: 'package.module:function' or 'path/to/file.py:function'.
_TARGET = re.compile(r"^(?P<where>[^:\s][^:]*):(?P<function>[A-Za-z_]\w*)$")
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class LambdaConfigError(ValueError):
    """A ``local.lambda_functions`` entry of the wrong shape."""


def check_functions(functions: Mapping[str, Any]) -> None:
    """Every entry is ``ARN or name -> 'package.module:function' | 'path/to/file.py:function'``."""
    for key, target in functions.items():
        if not isinstance(key, str) or not key.strip():
            raise LambdaConfigError(f"{key!r}: the key must be a function ARN or name")
        if not isinstance(target, str):
            raise LambdaConfigError(f"{key}: must be a string 'package.module:function' (got {target!r})")
        m = _TARGET.match(target.strip())
        where = m.group("where") if m else ""
        if not m or not (where.endswith(".py") or _MODULE.match(where)):
            raise LambdaConfigError(
                f"{key}: {target!r} is not 'package.module:function' or 'path/to/file.py:function'"
            )


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


class Registry(Strict):
    model_package_group: Annotated[str, Field(description="Model package group of the versions.")]

    _group = field_validator("model_package_group")(_match(NAME, "model package group name"))


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
        """Checked as EventBridge Scheduler would: cron(6 fields), rate(...) or at(...)."""
        from mlops.schedule_expressions import ScheduleError, parse_schedule

        try:
            parse_schedule(v)
        except ScheduleError as err:
            raise ValueError(
                f"not a valid cron(...), rate(...) or at(...) expression: {err.why} (got {v!r})"
            ) from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str):
        from mlops.schedule_expressions import ScheduleError, zone

        try:
            zone(v)
        except ScheduleError:
            raise ValueError(f"unknown time zone (got {v!r})") from None
        return v


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


class Local(Strict):
    file_systems: Annotated[
        dict[str, str],
        Field(description="Local directories standing in for EFS / FSx file system ids (id -> path)."),
    ] = {}
    max_parallel_steps: Annotated[int, Field(ge=1, le=64, description="Steps run at once, at most.")] = 2
    images: Annotated[
        dict[str, Any],
        Field(
            description="The Python environment standing in for each job image: an fnmatch pattern on "
            "repository:tag -> 'project', an interpreter (path or version), a requirements list, or "
            "{python, requirements}. Unmatched AWS framework images get built-in defaults (uv, cached)."
        ),
    ] = {}

    lambda_functions: Annotated[
        dict[str, str],
        Field(
            description="The local handler of each Lambda step's function: FunctionArn (or function name) -> "
            "'package.module:function' or 'path/to/file.py:function' (relative to the project root), "
            "called as handler(event, context) in a subprocess."
        ),
    ] = {}
    callback_timeout_s: Annotated[
        int,
        Field(
            ge=1,
            description="How long a Callback step without its own Timeout waits for "
            "'mlops callback succeed|fail TOKEN' before failing (SageMaker bounds the wait only by the "
            "pipeline execution's own limits).",
        ),
    ] = 86400

    @field_validator("images")
    @classmethod
    def _images(cls, v):
        from mlops.local.images.environments import ImageEnvError, rules_from_config

        try:
            rules_from_config(v)
        except ImageEnvError as err:
            raise ValueError(str(err)) from None
        return v

    @field_validator("lambda_functions")
    @classmethod
    def _lambda_functions(cls, v):
        try:
            check_functions(v)
        except LambdaConfigError as err:
            raise ValueError(str(err)) from None
        return v


# A SageMaker-managed MLflow resource: a tracking server or an MLflow App.
ARN_MLFLOW = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:mlflow-[a-z-]+/[A-Za-z0-9][\w-]{0,255}$"
)
EXPERIMENT_FIELDS = ("project", "env")
LOCAL_ENV = "local"  # the environment that needs no SageMaker tracking server: its runs log to a local one


class Mlflow(Strict):
    enabled: Annotated[
        bool,
        Field(
            description="Track runs with MLflow: the compiled pipeline's MlflowConfig names tracking_server_arn, "
            "and each local run (mlops run) logs its parameters, metric history, reports and model to a "
            "local MLflow server."
        ),
    ] = False
    tracking_server_arn: Annotated[
        str | None,
        Field(
            description="ARN of the SageMaker-managed MLflow tracking server the pipeline reports to "
            "(required when enabled, outside the local environment)."
        ),
    ] = None
    experiment: Annotated[
        str,
        Field(
            description="MLflow experiment of the runs; {project} and {env} are replaced by project.name "
            "and the environment."
        ),
    ] = "{project}-{env}"
    tracking_uri: Annotated[
        str | None,
        Field(
            description="Local runs: the MLflow tracking URI to log to ($MLFLOW_TRACKING_URI wins); unset: a "
            "local MLflow server over <home>/mlflow/ (SQLite), started on demand (mlops mlflow url|stop)."
        ),
    ] = None
    log_model: Annotated[
        bool,
        Field(description="Local runs: log the registered version's model.tar.gz as an artifact of the run."),
    ] = True

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str):
        try:
            name = v.format_map({k: k for k in EXPERIMENT_FIELDS})
        except (KeyError, ValueError, IndexError, AttributeError, TypeError):
            raise ValueError(
                f"only {{project}} and {{env}} may be replaced in the experiment name (got {v!r})"
            ) from None
        if not name.strip():
            raise ValueError("must not be empty")
        return v

    _arn = field_validator("tracking_server_arn")(_match(ARN_MLFLOW, "SageMaker MLflow tracking server ARN"))

    @model_validator(mode="after")
    def _needed_on_aws(self, info: ValidationInfo):
        """The environment comes from load_config's validation context (none: not checked)."""
        env = (info.context or {}).get("env")
        if self.enabled and self.tracking_server_arn is None and env is not None and env != LOCAL_ENV:
            raise ValueError(
                f"tracking_server_arn is required when enabled is true in {env!r}: the ARN of the SageMaker "
                "MLflow tracking server (arn:aws:sagemaker:REGION:ACCOUNT:mlflow-tracking-server/NAME)"
            )
        return self

    def experiment_name(self, project: str, env: str) -> str:
        return self.experiment.format_map({"project": project, "env": env})


class Tracking(Strict):
    mlflow: Annotated[Mlflow, Field(description="MLflow experiment tracking (optional; off by default).")] = (
        Mlflow()
    )


class BaseConfig(Strict):
    """The sections the toolkit reads; a project's schema subclasses this and adds its own."""

    env: Annotated[str, Field(description="Environment name (set from the overlay file name).")]
    project: Project
    aws: Aws
    registry: Registry
    schedule: Schedule
    retry: Retry = Retry()
    cache: Cache = Cache()
    local: Local = Local()
    tracking: Annotated[Tracking, Field(description="Experiment tracking of pipeline runs.")] = Tracking()

    def infra_parameters(self) -> dict[str, str]:
        """Template parameters of the project's own sections (``mlops infra render`` adds them to the
        toolkit's); a project schema overrides this when its infra/mlops.yaml declares more."""
        return {}


# The account id of AWS's documentation examples: the shipped overlays hold it until a team fills in its own.
PLACEHOLDER_ACCOUNT_IDS = ("123456789012",)  # noqa: config


def placeholder_keys(cfg: BaseModel) -> dict[str, list[str]]:
    """``{placeholder account id: [dotted keys whose value holds it]}`` for a loaded config."""
    found: dict[str, list[str]] = {}
    stack: list[tuple[Any, str]] = [(cfg.model_dump(mode="json"), "")]
    while stack:
        value, key = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{key}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, str):
            for account in PLACEHOLDER_ACCOUNT_IDS:
                if re.search(rf"(?<!\d){account}(?!\d)", value):
                    found.setdefault(account, []).append(key)
    return {account: sorted(keys) for account, keys in found.items()}


def project_root(info: ValidationInfo) -> Path:
    """The project root a validator may resolve paths against (passed as validation context)."""
    root = (info.context or {}).get("root")
    if root is None:
        raise ValueError("no project root to resolve the path against")
    return Path(root)


# ---------------------------------------------------------------------------------------------- loading


def environments(directory: Path) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.yaml") if p.stem != "base")


def _read_yaml(path: Path, rel) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{rel(path)}: file not found") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{rel(path)}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{rel(path)}: must be a mapping at the top level")
    return data


def _rel(path: Path, root: Path | None = None) -> str:
    """The shortest honest name: relative to the working directory or the project, else absolute."""
    resolved = path.resolve()
    for base in (Path.cwd(), *([root] if root else [])):
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


def load_config(
    env: str,
    directory: Path,
    *,
    schema: type[BaseConfig] = BaseConfig,
    root: Path | None = None,
    environ=None,
) -> BaseConfig:
    """Load and validate ``base.yaml`` + ``<env>.yaml`` + ``MLOPS__*`` variables, or raise ConfigError.

    ``schema`` is the project's config model; ``root`` the project root its validators resolve paths against.
    """
    directory = Path(directory)
    environ = os.environ if environ is None else environ

    def rel(path: Path) -> str:
        return _rel(path, root)

    base_path = directory / "base.yaml"
    env_path = directory / f"{env}.yaml"
    if env == "base" or not env_path.is_file():
        known = ", ".join(environments(directory)) or "none"
        raise ConfigError(f"{rel(env_path)}: unknown environment {env!r} (known: {known})")
    origin: dict[str, str] = {}
    base = _read_yaml(base_path, rel)
    _mark_all(origin, base, rel(base_path))
    merged = _merge(base, _read_yaml(env_path, rel), origin, rel(env_path))
    overrides, names = _env_overrides(environ)
    for var in names:
        dotted = ".".join(p.lower() for p in var[len(ENV_PREFIX) :].split("__"))
        origin[dotted] = f"${var}"
    merged = _merge(merged, overrides, {}, "")
    merged["env"] = env
    try:
        return schema.model_validate(merged, context={"root": root, "env": env})
    except ValidationError as exc:
        err = exc.errors()[0]
        dotted = _dotted(err["loc"])
        source = _locate(origin, dotted, rel(env_path))
        raise ConfigError(f"{source}: {dotted}: {_reason(err)}") from None


def _mark_all(origin: dict, tree: dict, name: str, prefix: str = "") -> None:
    for key, value in tree.items():
        _mark(origin, f"{prefix}{key}", value, name)


def reference(model: type[BaseModel] = BaseConfig, prefix: str = "") -> list[tuple[str, str, str, str]]:
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
