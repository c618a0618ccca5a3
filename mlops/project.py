"""The project the toolkit serves, and the one seam between them.

A project declares itself in its ``pyproject.toml``::

    [tool.mlops]
    declaration = "pipelines.project:declare"   # module:function returning a Declaration
    default-env = "local"

The toolkit finds that file from the working directory upward (``--project DIR`` or
``MLOPS_PROJECT_ROOT`` override it), imports the declaration from that root and never imports the
project's packages otherwise. The CLI reads all of this once, at its edge, and passes the ``Project`` down.
"""

from __future__ import annotations

import importlib
import os
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.errors import MlopsError

TOOLKIT_ROOT = Path(__file__).resolve().parent.parent
"""The directory the ``mlops`` package is imported from (what a sandboxed helper process needs)."""

PYPROJECT = "pyproject.toml"
ROOT_ENV = "MLOPS_PROJECT_ROOT"
CONFIG_DIR_ENV = "MLOPS_CONFIG_DIR"


class ProjectError(MlopsError):
    """No project, or a declaration the toolkit cannot use."""

    exit_code = 2


# ----------------------------------------------------------------------------- what the project provides


@dataclass(frozen=True)
class BuildInputs:
    """What the toolkit hands the project's pipeline builder at compile time."""

    cfg: Any  # the project's validated config (an instance of ``Declaration.config_schema``)
    session: Any  # the offline SageMaker PipelineSession
    bundles: Any  # mlops.compile.bundles.BundleRegistry: code the steps download
    root: Path  # the project root


@dataclass(frozen=True)
class GateResult:
    """A new endpoint version's verdict before it takes traffic."""

    passed: bool
    reason: str = ""
    report: dict[str, Any] | None = None


@dataclass(frozen=True)
class DeployRequest:
    """An approved model version the local deploy is about to roll out."""

    cfg: Any
    package: Mapping[str, Any]  # the registry row (group_name, version, arn, execution_id, ...)
    target_stage: str
    home: Any  # mlops.local.state.Home
    store: Any  # mlops.local.s3store.S3Store


@dataclass(frozen=True)
class DeployPlan:
    """The deploy pipeline's parameters (beyond ModelPackageArn) and the gate each endpoint version passes."""

    parameters: dict[str, str] = field(default_factory=dict)
    gate: Callable[[str, str], GateResult] | None = None  # (endpoint name, version URL) -> verdict


@dataclass(frozen=True)
class StartRequest:
    """A pipeline of the project about to start: ``mlops run`` (local registry) or ``mlops start`` (SageMaker's)."""

    cfg: Any
    pipeline: str  # the key, e.g. "batch-score"
    params: Mapping[str, str]  # what the caller gave (--param)
    registry: Any  # mlops.registry.local.LocalRegistry or .aws.AwsRegistry: list(group=, status=) -> rows


Seeder = Callable[[Path], int | None]
"""Writes seed files into a directory; returns how many rows (or None)."""


@dataclass(frozen=True)
class PromotionGate:
    """The deploy pipeline's wait for a person between staging and production: a Callback step whose
    message carries ``ModelPackageArn``; ``mlops models promote`` answers it with ``output`` = who."""

    step: str  # the Callback step's name
    output: str  # its one String output: set to the actor who promoted
    queue_url: Callable[[Any], str]  # cfg -> the SQS queue SageMaker puts its message on


@dataclass(frozen=True)
class Declaration:
    """Everything the toolkit needs to know about a project."""

    config_schema: type  # a subclass of mlops.config.BaseConfig
    build_pipelines: Callable[[BuildInputs], dict[str, Any]]  # key -> SDK Pipeline, e.g. "model-build"
    default_pipeline: str  # what a plain ``mlops run`` runs
    deploy_pipeline: str | None = None  # what approving a model version runs locally
    endpoint_ports: Callable[[Any], dict[str, int]] = lambda cfg: {}  # endpoint name -> local port
    plan_deploy: Callable[[DeployRequest], DeployPlan] | None = None
    seed_data: Callable[[Any], dict[str, Seeder]] | None = None  # S3 prefix -> seeder, used when empty
    pipelines: tuple[str, ...] = ()  # further pipelines the builder returns (e.g. "batch-score")
    # parameters resolved when a pipeline starts (e.g. the latest Approved model version); raises
    # MlopsError to refuse the start
    start_parameters: Callable[[StartRequest], dict[str, str]] | None = None
    # config path of each schedule (an mlops.config.Schedule section) -> the pipeline it starts; default:
    # the retraining ``schedule`` starts the default pipeline
    schedules: dict[str, str] | None = None
    promotion: PromotionGate | None = None  # the deploy pipeline's promotion gate, where it has one

    def schedules_of(self) -> dict[str, str]:
        return dict(self.schedules) if self.schedules is not None else {"schedule": self.default_pipeline}


@dataclass(frozen=True)
class Project:
    root: Path
    declaration: Declaration
    default_env: str
    config_dir: Path

    @property
    def default_home(self) -> Path:
        return self.root / ".mlops"

    def environments(self) -> list[str]:
        return sorted(p.stem for p in self.config_dir.glob("*.yaml") if p.stem != "base")

    def load_config(self, env: str, environ: Mapping[str, str] | None = None):
        from mlops.config import load_config

        return load_config(
            env, self.config_dir, schema=self.declaration.config_schema, root=self.root, environ=environ
        )

    def pipeline_keys(self) -> list[str]:
        keys = [self.declaration.default_pipeline]
        if self.declaration.deploy_pipeline:
            keys.append(self.declaration.deploy_pipeline)
        return keys + [k for k in self.declaration.pipelines if k not in keys]

    def start_parameters(self, cfg, key: str, params: Mapping[str, str], registry) -> dict[str, str]:
        """``params`` plus what the project resolves at the start of pipeline ``key``."""
        hook = self.declaration.start_parameters
        resolved = hook(StartRequest(cfg, key, dict(params), registry)) if hook else {}
        return {**params, **resolved}


# ------------------------------------------------------------------------------------------- finding it


def find_root(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` whose pyproject.toml has a [tool.mlops] table."""
    for directory in (start, *start.parents):
        candidate = directory / PYPROJECT
        if candidate.is_file() and _tool_table(candidate) is not None:
            return directory
    return None


def _tool_table(path: Path) -> dict[str, Any] | None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    table = data.get("tool", {}).get("mlops")
    return table if isinstance(table, dict) else None


def load_project(
    explicit: str | os.PathLike | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Project:
    """``explicit`` (``--project``) beats ``$MLOPS_PROJECT_ROOT`` beats the working directory upward."""
    environ = os.environ if environ is None else environ
    given = explicit or environ.get(ROOT_ENV)
    if given:
        root = Path(given).expanduser().resolve()
        if not (root / PYPROJECT).is_file():
            raise ProjectError(f"{root}: no {PYPROJECT} here (from {'--project' if explicit else ROOT_ENV})")
    else:
        start = (cwd or Path.cwd()).resolve()
        found = find_root(start)
        if found is None:
            raise ProjectError(
                f"no mlops project at or above {start}: run inside a checkout (a {PYPROJECT} with a "
                f"[tool.mlops] table) or pass --project DIR"
            )
        root = found
    table = _tool_table(root / PYPROJECT)
    if table is None:
        raise ProjectError(f"{root / PYPROJECT}: no [tool.mlops] table")
    where = f"{root / PYPROJECT}: tool.mlops"
    target = table.get("declaration")
    if not isinstance(target, str) or ":" not in target:
        raise ProjectError(f"{where}.declaration: expected 'module:function' (got {target!r})")
    default_env = table.get("default-env", "local")
    if not isinstance(default_env, str) or not default_env:
        raise ProjectError(f"{where}.default-env: expected an environment name (got {default_env!r})")
    declaration = _import_declaration(root, target, where)
    config_dir = Path(environ.get(CONFIG_DIR_ENV) or root / "config").resolve()
    return Project(root, declaration, default_env, config_dir)


def _import_declaration(root: Path, target: str, where: str) -> Declaration:
    module_name, _, func_name = target.partition(":")
    top = module_name.split(".")[0]
    loaded = sys.modules.get(top)
    loaded_from = getattr(loaded, "__file__", None) if loaded else None
    if loaded_from and not Path(loaded_from).resolve().is_relative_to(root):
        # another checkout's package of the same name was imported first (one installed mlops, two clones)
        for name in [n for n in sys.modules if n == top or n.startswith(top + ".")]:
            del sys.modules[name]
    if str(root) not in sys.path[:1]:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ProjectError(f"{where}.declaration: cannot import {module_name} ({err})") from err
    func = getattr(module, func_name, None)
    if not callable(func):
        raise ProjectError(f"{where}.declaration: {module_name} has no function {func_name}")
    declaration = func()
    if not isinstance(declaration, Declaration):
        raise ProjectError(f"{where}.declaration: {target} must return mlops.project.Declaration")
    return declaration
