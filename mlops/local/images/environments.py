"""The Python environment that stands in for a job's container image.

A job names an image (``sagemaker-scikit-learn:1.2-1-cpu-py3``); locally nothing is pulled, so its script
runs on some Python of this machine. Running every job on the project's own environment (pandas 3, numpy 2)
breaks scripts written for the image's libraries (``read_csv(error_bad_lines=...)`` is pandas 1.x). This
module chooses, per image, what stands in for it:

* :func:`choose` (pure): the user's :class:`ImageEnvRule` list first (config ``local.images``: a pattern on
  ``repository:tag`` -> an interpreter, a requirements set, or the project's environment), then the
  defaults for AWS's framework images (:func:`default_choice`), then the project's environment.
* :func:`prepare`: builds the choice on demand with uv — ``uv pip compile`` the requirements for that Python
  into a lock, ``uv venv``, ``uv pip sync`` the lock — under a cache shared by runs and projects
  (``$MLOPS_ENV_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/mlops/envs``), keyed by a hash of the Python and
  the lock's inputs. Builders of one key serialise on an ``fcntl`` lock and the later ones reuse the first
  one's env; a build happens in a temporary directory renamed into place when complete, so a failed or
  killed build leaves nothing half-built where the env would be.
* :func:`check`: what would stop :func:`prepare`, without building (for a ``--check`` command).
* :func:`failure_hint`: the sentence to add to a job failure that may come from the stand-in.

Defaults (facts and sources are beside each table):

* scikit-learn images: the image's scikit-learn, pandas, numpy, scipy, pyarrow, sagemaker-training (the
  container toolkit that runs framework-mode scripts) and boto3, on the image's Python.
* XGBoost images (framework and built-in algorithm): the image's xgboost, scikit-learn, pandas, numpy, scipy,
  pyarrow and boto3, plus sagemaker-training (the images ship sagemaker-containers instead; the local
  launcher runs framework mode with sagemaker-training).
* PyTorch images: the project's environment. PyPI's Linux torch wheels are multi-GB CUDA builds and the
  CPU wheels live on download.pytorch.org (not reachable here), so the image's torch is not rebuilt: the
  project's torch stands in and :func:`failure_hint` says so. A rule maps the image elsewhere.
* TensorFlow images: ``tensorflow-cpu==X.Y.*`` (``tensorflow`` before 2.1), sagemaker-training, boto3 on the
  image's Python, built on demand (hundreds of MB).
* Hugging Face images: TensorFlow-based ones as TensorFlow plus ``transformers==V``; PyTorch-based ones an
  *overlay*: a venv on the project's interpreter holding ``transformers==V`` (torch excluded from the
  resolution), which sees the project's site-packages after its own, so the project's torch stands in.
* Anything else (Spark, MXNet, AutoGluon, the other built-in algorithms, AWS service images, custom
  images): the project's environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from mlops.errors import MlopsError
from mlops.local.images.image_uri import BASE_PYTHON, ImageInfo, parse_image_uri

CONFIG_KEY = "local.images"  # where the project's config maps image patterns to environments
CACHE_ENV = "MLOPS_ENV_CACHE"
SCHEMA = 1  # bump when the layout or the build recipe changes: old keys are then never reused
META = "mlops-env.json"  # written last, inside the env, before it is renamed into place
LOCK_FILE = "mlops-lock.txt"
REQUIREMENTS_FILE = "mlops-requirements.in"
EXCLUDES_FILE = "mlops-excludes.txt"
OVERLAY_PTH = "_mlops_project_env.pth"

Progress = Callable[[str], None]
Mode = Literal["project", "interpreter", "uv", "overlay"]


class ImageEnvError(MlopsError):
    """An environment for an image that cannot be found or built; ``str(err)`` is one line."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details  # uv's output, for a log


# -- rules -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageEnvRule:
    """One entry of config ``local.images``: images whose ``repository:tag`` matches ``pattern`` (fnmatch; a
    pattern with a ``/`` is matched against the whole URI) run on:

    * ``use_project``: the project's environment;
    * ``python`` alone: that interpreter as it is (a path, or a version like ``"3.9"`` found on this machine);
    * ``requirements``: a uv environment of those requirements, on ``python`` (path or version) or else the
      image's Python (from its tag or documentation), or else the project's Python version.
    """

    pattern: str
    python: str | None = None
    requirements: list[str] | None = None
    use_project: bool = False

    def __post_init__(self):
        if not self.pattern:
            raise ValueError("an image rule needs a pattern")
        if self.use_project and (self.python or self.requirements):
            raise ValueError(f"{self.pattern}: use_project takes neither python nor requirements")
        if not self.use_project and not self.python and self.requirements is None:
            raise ValueError(f"{self.pattern}: give python, requirements or use_project")
        if self.python and not (_is_path(self.python) or _VERSION.match(self.python)):
            raise ValueError(
                f"{self.pattern}: python must be a path or a version like 3.9 (got {self.python!r})"
            )

    def matches(self, info: ImageInfo) -> bool:
        target = info.uri if "/" in self.pattern else info.name
        return fnmatch.fnmatchcase(target, self.pattern)


def rules_from_config(mapping: Mapping[str, Any] | None) -> list[ImageEnvRule]:
    """Rules from config ``local.images`` (in order): ``pattern: project``, ``pattern: /path/python3.9`` or
    ``"3.9"``, ``pattern: [requirement, ...]``, or ``pattern: {python, requirements, use_project}``."""
    rules = []
    for pattern, value in (mapping or {}).items():
        try:
            if value == "project":
                rules.append(ImageEnvRule(pattern, use_project=True))
            elif (
                isinstance(value, float)
                or isinstance(value, Mapping)
                and isinstance(value.get("python"), float)
            ):
                raise ValueError("write the Python version as a string ('3.10'): YAML reads 3.10 as 3.1")
            elif isinstance(value, str):
                rules.append(ImageEnvRule(pattern, python=value))
            elif isinstance(value, list):
                rules.append(ImageEnvRule(pattern, requirements=[str(r) for r in value]))
            elif isinstance(value, Mapping):
                unknown = set(value) - {"python", "requirements", "use_project"}
                if unknown:
                    raise ValueError(f"unknown keys {sorted(unknown)}")
                reqs = value.get("requirements")
                rules.append(
                    ImageEnvRule(
                        pattern,
                        python=None if value.get("python") is None else str(value["python"]),
                        requirements=None if reqs is None else [str(r) for r in reqs],
                        use_project=bool(value.get("use_project", False)),
                    )
                )
            else:
                raise ValueError(f"expected project, an interpreter, a list or a mapping (got {value!r})")
        except ValueError as err:
            raise ImageEnvError(f"{CONFIG_KEY}.{pattern}: {err}") from None
    return rules


# -- the choice (pure) -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvChoice:
    """What stands in for an image, before anything is looked up or built."""

    image: ImageInfo
    mode: Mode
    origin: Literal["rule", "default", "fallback"]
    python: str | None = None  # interpreter path or X.Y[.Z] version; None: the project's
    requirements: tuple[str, ...] = ()
    rule: ImageEnvRule | None = None
    only_binary: bool = False  # wheels only (old pins otherwise pull sdists that no longer build) ...
    source_packages: tuple[str, ...] = ()  # ... except these, which publish no wheels
    excludes: tuple[str, ...] = ()  # overlay: left out of the resolution (the project's env provides them)
    imports: tuple[str, ...] = ()  # checked after a build
    stands_in: str = ""  # what differs from the image: "torch 2.13.0 (project) for the image's torch 2.5"
    note: str = ""  # where the default comes from, or why there is none

    @property
    def builds(self) -> bool:
        return self.mode in ("uv", "overlay")

    def summary(self) -> str:
        if self.mode == "project":
            return "the project's environment"
        if self.mode == "interpreter":
            return f"interpreter {self.python}"
        if self.mode == "overlay":
            py = f"py{_project_python_minor()}"
        else:
            py = f"py{self.python}" if self.python and not _is_path(self.python) else (self.python or "py?")
        kind = "uv overlay on the project's env" if self.mode == "overlay" else "uv env"
        return f"{kind} {py} {' '.join(self.requirements)}".rstrip()


def choose(image_uri: str | ImageInfo, rules: Sequence[ImageEnvRule] = ()) -> EnvChoice:
    """The user's rules first (the first match wins), then the defaults, then the project's environment."""
    info = image_uri if isinstance(image_uri, ImageInfo) else parse_image_uri(image_uri)
    for rule in rules:
        if rule.matches(info):
            return _rule_choice(info, rule)
    return default_choice(info)


def _rule_choice(info: ImageInfo, rule: ImageEnvRule) -> EnvChoice:
    where = f"rule {CONFIG_KEY}[{rule.pattern!r}]"
    if rule.use_project:
        return EnvChoice(info, "project", "rule", rule=rule, note=where)
    if rule.requirements is None:
        return EnvChoice(info, "interpreter", "rule", python=rule.python, rule=rule, note=where)
    python = rule.python or info.python_version or _project_python_minor()
    return EnvChoice(
        info, "uv", "rule", python=python, requirements=tuple(rule.requirements), rule=rule, note=where
    )


# scikit-learn images: image version -> pins. Sources: github:aws/sagemaker-scikit-learn-container, branch
# <version> (0.20.0, 0.23-1, 1.0-1, 1.2-1, v1.4-2, release-1.4-2-py312): requirements.txt for pandas, numpy,
# scipy, sagemaker-training and boto3; docker/<version>/base/Dockerfile.cpu for scikit-learn
# (``pip install scikit-learn==``) and pyarrow (``ARG PYARROW_VERSION``, installed with conda);
# 1.9-0 and 1.4-2-py312 as github:aws/deep-learning-containers builds them now: docker/sklearn/1.9-0/
# pyproject.toml, docker/sklearn/1.4-2-py312/requirements.txt. The Python is image_uri.DOCUMENTED_PYTHON.
SKLEARN_IMAGES: dict[str, tuple[str, ...]] = {
    # 0.20.0: Dockerfile scikit-learn==0.20.0, PYARROW_VERSION=0.14.1; requirements pandas==0.25.*,
    # numpy==1.19.5, sagemaker-training>=3.4.2; scipy from conda, unpinned.
    "0.20.0": (
        "scikit-learn==0.20.0",
        "pandas==0.25.*",
        "numpy==1.19.5",
        "scipy",
        "pyarrow==0.14.1",
        "sagemaker-training>=3.4.2",
        "boto3",
    ),
    "0.23-1": (
        "scikit-learn==0.23.2",
        "pandas==1.1.3",
        "numpy==1.19.2",
        "scipy==1.5.3",
        "pyarrow==1.0.0",
        "sagemaker-training==4.0.1",
        "boto3==1.24.17",
    ),
    "1.0-1": (
        "scikit-learn==1.0.2",
        "pandas==1.1.3",
        "numpy==1.24.1",
        "scipy==1.8.0",
        "pyarrow==14.0.1",
        "sagemaker-training==4.7.4",
        "boto3==1.28.57",
    ),
    "1.2-1": (
        "scikit-learn==1.2.1",
        "pandas==1.1.3",
        "numpy==1.24.1",
        "scipy==1.8.0",
        "pyarrow==14.0.1",
        "sagemaker-training==4.8.0",
        "boto3==1.28.57",
    ),
    # v1.4-2 (2025-09 on): scikit-learn 1.4.2, numpy 2.1.0, pandas 2.3.2, scipy>=1.9.0, pyarrow 17.0.0.
    "1.4-2": (
        "scikit-learn==1.4.2",
        "pandas==2.3.2",
        "numpy==2.1.0",
        "scipy>=1.9.0",
        "pyarrow==17.0.0",
        "sagemaker-training==4.8.0",
        "boto3==1.28.57",
    ),
    "1.4-2-py312": (
        "scikit-learn==1.4.2",
        "pandas==2.3.2",
        "numpy==2.1.0",
        "scipy>=1.9.0",
        "pyarrow==17.0.0",
        "sagemaker-training==4.8.0",
        "boto3==1.28.57",
    ),
    "1.9-0": (
        "scikit-learn==1.9.0",
        "pandas==2.2.3",
        "numpy==2.5.1",
        "scipy==1.18.0",
        "pyarrow==25.0.0",
        "sagemaker-training==4.8.0",
        "boto3==1.43.46",
    ),
}

# XGBoost images: image version -> pins. Sources: github:aws/sagemaker-xgboost-container, branch <version>:
# docker/<version>/base/Dockerfile.cpu (``pip install xgboost==`` / ``ARG XGBOOST_VERSION``, ``ARG
# PYARROW_VERSION``) and requirements.txt (pandas, numpy, scipy, scikit-learn, boto3); 3.0-5 and 3.2-0 from
# github:aws/deep-learning-containers docker/xgboost/3.0-5/{Dockerfile,requirements.txt} and
# docker/xgboost/{Dockerfile,pyproject.toml}. From 3.0 the stand-in takes ``xgboost-cpu`` (the same module,
# CPU-only: PyPI's ``xgboost`` wheel pulls nvidia-nccl-cu12). The images run framework-mode scripts with
# sagemaker-containers; the local launcher (mlops.local.images.launch) runs them with sagemaker-training, so
# the stand-in adds it, pinned to the newest release that resolves with the image's pins (uv, 2026-12: 4.7.0
# with the images' boto3 1.17 / 1.10 / 1.13 and on 3.10; 5.1.4 for 3.2-0): unpinned, uv backtracks through
# its sdist-only releases for a minute.
XGBOOST_IMAGES: dict[str, tuple[str, ...]] = {
    "0.90-1": (
        "xgboost==0.90",
        "scikit-learn==0.22.1",
        "pandas==0.25.3",
        "numpy==1.18.1",
        "scipy==1.2.2",
        "pyarrow==0.14.1",
        "boto3==1.10.47",
        "sagemaker-training==4.7.0",
    ),
    "0.90-2": (
        "xgboost==0.90",
        "scikit-learn==0.23.1",
        "pandas==1.0.4",
        "numpy==1.18.4",
        "scipy==1.2.2",
        "pyarrow==0.14.1",
        "boto3==1.13.21",
        "sagemaker-training==4.7.0",
    ),
    # 1.0-1: requirements.txt pins no numpy.
    "1.0-1": (
        "xgboost==1.0.0",
        "scikit-learn==0.24.1",
        "pandas==1.1.3",
        "numpy",
        "scipy==1.2.2",
        "pyarrow==0.14.1",
        "boto3==1.17.52",
        "sagemaker-training==4.7.0",
    ),
    "1.2-1": (
        "xgboost==1.2.0",
        "scikit-learn==0.23.2",
        "pandas==1.1.3",
        "numpy==1.21.6",
        "scipy==1.5.3",
        "pyarrow==1.0.*",
        "boto3==1.17.52",
        "sagemaker-training==4.7.0",
    ),
    "1.2-2": (
        "xgboost==1.2.0",
        "scikit-learn==0.23.2",
        "pandas==1.1.3",
        "numpy==1.21.6",
        "scipy==1.5.3",
        "pyarrow==1.0.*",
        "boto3==1.17.52",
        "sagemaker-training==4.7.0",
    ),
    "1.3-1": (
        "xgboost==1.3.3",
        "scikit-learn==0.24.1",
        "pandas==1.2.4",
        "numpy==1.21.6",
        "scipy==1.6.2",
        "pyarrow==1.0.*",
        "boto3==1.17.52",
        "sagemaker-training==4.7.0",
    ),
    "1.5-1": (
        "xgboost==1.5.2",
        "scikit-learn==0.24.1",
        "pandas==1.5.3",
        "numpy==1.24.4",
        "scipy==1.8.0",
        "pyarrow==14.0.1",
        "boto3==1.17.52",
        "sagemaker-training==4.7.0",
    ),
    "1.7-1": (
        "xgboost==1.7.4",
        "scikit-learn==0.24.1",
        "pandas==1.2.4",
        "numpy==1.24.1",
        "scipy==1.8.0",
        "pyarrow==14.0.1",
        "boto3==1.17.52",
        "sagemaker-training==4.7.0",
    ),
    "3.0-5": (
        "xgboost-cpu==3.0.5",
        "scikit-learn==1.5.2",
        "pandas==2.2.3",
        "numpy==2.1.0",
        "scipy==1.15.0",
        "pyarrow==22.0.0",
        "boto3==1.17.52",
        "sagemaker-training==4.7.0",
    ),
    "3.2-0": (
        "xgboost-cpu==3.2.0",
        "scikit-learn==1.8.0",
        "pandas==2.2.3",
        "numpy==2.1.0",
        "scipy==1.15.0",
        "pyarrow==22.0.0",
        "boto3==1.38.0",
        "sagemaker-training==5.1.4",
    ),
}

# Published as sdists only (PyPI has no wheel of any version): built from source, which needs a C compiler
# for sagemaker-training's ``gethostname`` extension.
TOOLKIT_SOURCE_PACKAGES = ("sagemaker-training", "inotify-simple")
PROJECT_PROVIDED = ("torch", "torchvision", "torchaudio")  # an overlay takes these from the project's env


# What every AWS framework image has beside its pins (pulled in by sagemaker-containers / sagemaker-inference
# in the images' requirements.txt) and scripts import as a matter of course (the Projects seed code's
# preprocess.py imports requests).
IMAGE_COMMON = ("requests",)
# The first boto3 whose botocore honours the service endpoint variables (AWS_ENDPOINT_URL_S3, botocore
# 1.31.57): an image's older pin is raised to it, so that its job code reaches the local S3 API rather than
# AWS. The one deliberate difference from the image's libraries (failure_hint names the lock).
LOCAL_BOTO3_FLOOR = (1, 28, 57)


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:3])


def _local_pins(requirements: tuple[str, ...], python: str | None) -> tuple[str, ...]:
    out = []
    # boto3 1.28.57 needs Python 3.7: on a 3.6 image the image's boto3 stays (and reaches no local S3 API)
    floor_ok = python is None or tuple(int(x) for x in python.split(".")[:2]) >= (3, 7)
    for req in requirements:
        name, _, version = req.partition("==")
        if name == "boto3" and version and floor_ok and _release(version) < LOCAL_BOTO3_FLOOR:
            req = f"boto3>={'.'.join(map(str, LOCAL_BOTO3_FLOOR))}"
        out.append(req)
    return (*out, *IMAGE_COMMON)


def default_choice(info: ImageInfo) -> EnvChoice:
    """The built-in default for ``info`` (no rules)."""
    fw, version = info.framework, info.framework_version
    pinned = {
        "sklearn": (
            SKLEARN_IMAGES,
            "scikit-learn",
            ("sklearn", "pandas", "numpy", "scipy", "pyarrow", "boto3"),
        ),
        "xgboost": (XGBOOST_IMAGES, "XGBoost", ("xgboost", "sklearn", "pandas", "numpy", "scipy", "pyarrow")),
    }
    if info.kind == "framework" and fw in pinned:
        table, label, imports = pinned[fw]
        if version not in table:
            return _fallback(info, f"no default for {label} image {version} (known: {', '.join(table)})")
        python, stands_in = info.python_version, ""
        if fw == "xgboost" and python and _minor_tuple(python) < ALGORITHM_MIN_PYTHON:
            # the built-in algorithm's stand-in (xgboost_algorithm.py) needs 3.7; the image's pins install there
            python = ".".join(map(str, ALGORITHM_MIN_PYTHON))
            stands_in = f"Python {python} for the image's {info.python_version}"
        return EnvChoice(
            info,
            "uv",
            "default",
            python=python,
            stands_in=stands_in,
            requirements=_local_pins(table[version], python),
            only_binary=True,
            source_packages=TOOLKIT_SOURCE_PACKAGES,
            imports=(*imports, "sagemaker_training"),
            note=f"default for the {label} {version} image",
        )
    if info.kind == "aws" and BASE_PYTHON.match(info.repository) and info.python_version:
        # Studio's base Python image: a plain Python with pip and boto3. The SDK's @step jobs run on it and
        # install the client's SDK from their own requirements (with_requirements).
        return EnvChoice(
            info,
            "uv",
            "default",
            python=info.python_version,
            requirements=("pip", "boto3", *IMAGE_COMMON),
            only_binary=True,
            imports=("boto3",),
            note=f"default for the base Python {info.python_version} image",
        )
    if info.kind == "framework" and fw == "pytorch":
        return _fallback(
            info,
            "PyPI's torch wheels for Linux are multi-GB CUDA builds: the project's torch stands in",
            stands_in=_stands_in("torch", version),
        )
    if info.kind == "framework" and fw == "tensorflow" and version:
        return EnvChoice(
            info,
            "uv",
            "default",
            python=info.python_version,
            # what the SageMaker TensorFlow images carry beside TensorFlow (aws/deep-learning-containers
            # docker/tensorflow/<v>/cpu/pyproject.toml, its "sagemaker" extra)
            requirements=(
                _tensorflow_requirement(version),
                "sagemaker-training",
                "boto3",
                "pandas",
                "scikit-learn",
                "scipy",
                "h5py",
                *IMAGE_COMMON,
            ),  # fmt: skip
            only_binary=True,
            # TensorFlow 2.x before 2.5 pins termcolor 1.1.0 and wrapt 1.12.1, published as sdists only
            source_packages=(*TOOLKIT_SOURCE_PACKAGES, "termcolor", "wrapt"),
            imports=("tensorflow", "sagemaker_training"),
            note=f"default for the TensorFlow {version} image",
        )
    if info.kind == "framework" and fw == "huggingface" and version and info.base_framework_version:
        base = info.base_framework_version
        if info.base_framework == "tensorflow":
            return EnvChoice(
                info,
                "uv",
                "default",
                python=info.python_version,
                requirements=(f"transformers=={version}", _tensorflow_requirement(base)),
                only_binary=True,
                imports=("transformers", "tensorflow"),
                note=f"default for the Hugging Face transformers {version} TensorFlow {base} image",
            )
        return EnvChoice(
            info,
            "overlay",
            "default",
            python=None,
            requirements=(f"transformers=={version}",),
            only_binary=True,
            excludes=PROJECT_PROVIDED,
            imports=("transformers",),
            stands_in=_stands_in("torch", base),
            note=f"default for the Hugging Face transformers {version} PyTorch {base} image",
        )
    reasons = {
        "framework": f"no stand-in is built for {fw} images",
        "algorithm": f"the built-in {info.algorithm} algorithm runs its own program",
        "aws": "an AWS image that runs its own program",
        "custom": "a custom image",
    }
    return _fallback(info, reasons[info.kind])


def _fallback(info: ImageInfo, note: str, stands_in: str = "") -> EnvChoice:
    return EnvChoice(info, "project", "fallback", stands_in=stands_in, note=note)


def _tensorflow_requirement(version: str) -> str:
    parts = version.split(".")
    minor = ".".join(parts[:2])
    try:
        cpu = (int(parts[0]), int(parts[1])) >= (2, 1)  # tensorflow-cpu is published from 2.1
    except (ValueError, IndexError):
        cpu = True
    return f"{'tensorflow-cpu' if cpu else 'tensorflow'}=={minor}.*"


ALGORITHM_MIN_PYTHON = (3, 7)


def _minor_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split(".")[:2])


def _stands_in(package: str, image_version: str | None) -> str:
    have = _project_version(package)
    ours = f"{package} {have}" if have else f"no {package}"
    theirs = f"the image's {package} {image_version}" if image_version else f"the image's {package}"
    return f"{ours} (the project's environment) stands in for {theirs}"


def _project_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _project_python_minor() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


# -- interpreters ----------------------------------------------------------------------------------------

_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
_PROBE = (
    "import sys, json; print(json.dumps({'version': '%d.%d.%d' % tuple(sys.version_info[:3]), "
    "'prefix': sys.prefix, 'base_prefix': getattr(sys, 'base_prefix', sys.prefix), "
    "'executable': sys.executable}))"
)


def _is_path(spec: str) -> bool:
    return "/" in spec or spec.startswith("~")


@dataclass(frozen=True)
class Interpreter:
    path: Path  # as found (a venv's bin/python or a base interpreter)
    version: str  # "3.9.18"
    prefix: Path
    base_prefix: Path
    executable: Path  # resolved

    @property
    def minor(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def mounts(self) -> tuple[Path, ...]:
        dirs = [self.prefix, self.base_prefix]
        if not any(_under(self.executable, d) for d in dirs):
            dirs.append(self.executable.parent)
        return _outermost(dirs)


@functools.lru_cache(maxsize=64)
def probe(path: str) -> Interpreter | None:
    """What ``path`` is, or None when it does not run (a missing file, a pyenv shim without that version)."""
    try:
        out = subprocess.run(
            [path, "-c", _PROBE], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
        data = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        data = None
    if not data:
        return None
    return Interpreter(
        path=Path(path),
        version=data["version"],
        prefix=Path(os.path.realpath(data["prefix"])),
        base_prefix=Path(os.path.realpath(data["base_prefix"])),
        executable=Path(os.path.realpath(data["executable"] or path)),
    )


def _matches(version: str, wanted: str) -> bool:
    return version == wanted or version.startswith(wanted + ".")


def _candidates(wanted: str) -> Iterator[tuple[str, str]]:
    """(where, path) for a Python ``wanted`` (X.Y or X.Y.Z): uv's own search (no downloads), pyenv, PATH."""
    uv = find_uv()
    if uv:
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1"}
        env.pop("VIRTUAL_ENV", None)
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(
                [uv, "python", "find", "--no-config", "--system", wanted],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                cwd=tempfile.gettempdir(),
                stdin=subprocess.DEVNULL,
            )
            if out.returncode == 0 and out.stdout.strip():
                yield "uv python find", out.stdout.strip().splitlines()[-1]
    minor = ".".join(wanted.split(".")[:2])
    for root in _pyenv_roots():
        versions = root / "versions"
        if not versions.is_dir():
            continue
        found = []
        for d in versions.iterdir():
            m = _VERSION.match(d.name)
            if m and _matches(d.name, wanted):
                found.append((tuple(int(x or 0) for x in m.groups()), d))
        for _, d in sorted(found, reverse=True):
            yield "pyenv", str(d / "bin" / f"python{minor}")
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d:
            yield "PATH", os.path.join(d, f"python{minor}")


def _pyenv_roots() -> list[Path]:
    roots = [Path(os.environ["PYENV_ROOT"])] if os.environ.get("PYENV_ROOT") else []
    roots.append(Path.home() / ".pyenv")
    return list(dict.fromkeys(roots))


def find_interpreter(spec: str, image: ImageInfo | None = None) -> Interpreter:
    """The interpreter ``spec`` names: a path, or a version found with ``uv python find`` (never
    downloading), in pyenv's versions, or as ``pythonX.Y`` on PATH. Raises a one-line ImageEnvError."""
    for_image = f" for image {image.name}" if image else ""
    pattern = _example_pattern(image)
    if _is_path(spec):
        path = os.path.expanduser(spec)
        interp = probe(path)
        if interp is None:
            raise ImageEnvError(
                f"interpreter {spec}{for_image} does not exist or does not run; "
                f"map the image to another one in config {CONFIG_KEY} ({pattern}: {{python: /path/to/python3}})"
            )
        return interp
    if not _VERSION.match(spec):
        raise ImageEnvError(f"{spec!r}{for_image} is neither an interpreter path nor a version like 3.9")
    for _where, path in _candidates(spec):
        interp = probe(path)
        if interp is not None and _matches(interp.version, spec):
            return interp
    minor = ".".join(spec.split(".")[:2])
    raise ImageEnvError(
        f"no Python {spec} interpreter{for_image} (looked with uv python find, in pyenv's versions and for "
        f"python{minor} on PATH): install one (uv python install {spec}, or pyenv install {spec}), or map "
        f"the image to another interpreter in config {CONFIG_KEY} ({pattern}: {{python: /path/to/python3}})"
    )


def _example_pattern(image: ImageInfo | None) -> str:
    if image is None:
        return '"<repository>:<tag>"'
    if image.tag and image.framework_version and image.tag.startswith(image.framework_version):
        return f'"{image.repository}:{image.framework_version}*"'
    return f'"{image.name}"'


def project_interpreter() -> Interpreter:
    return Interpreter(
        path=Path(sys.executable),
        version=".".join(map(str, sys.version_info[:3])),
        prefix=Path(os.path.realpath(sys.prefix)),
        base_prefix=Path(os.path.realpath(sys.base_prefix)),
        executable=Path(os.path.realpath(sys.executable)),
    )


def _project_base_interpreter() -> Interpreter:
    """The interpreter the project's venv was made from (an overlay venv is made from it too)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    interp = probe(base) if base != sys.executable else None
    if interp is None:
        interp = probe(os.path.join(sys.base_prefix, "bin", f"python{_project_python_minor()}"))
    if interp is None:
        raise ImageEnvError(f"cannot find the base interpreter of the project's environment ({sys.prefix})")
    return interp


# -- uv --------------------------------------------------------------------------------------------------


def find_uv() -> str | None:
    """``$MLOPS_UV``, the ``uv`` package's binary (``pip install uv``), or ``uv`` on PATH."""
    if os.environ.get("MLOPS_UV"):
        return os.environ["MLOPS_UV"]
    try:
        import uv  # type: ignore[import-not-found]

        path = uv.find_uv_bin()
        if path and os.access(path, os.X_OK):
            return path
    except (ImportError, FileNotFoundError):
        pass
    return shutil.which("uv")


def _uv_env() -> dict[str, str]:
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1", "NO_COLOR": "1"}
    for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX"):
        env.pop(var, None)
    return env


# Lines of uv's output worth a progress line.
_UV_PROGRESS = re.compile(
    r"^\s*(Resolved|Prepared|Installed|Uninstalled|Downloading|Downloaded|Building|Built)\b"
)


def _run(cmd: list[str], *, phase: str, image: ImageInfo, cwd: Path, progress: Progress, stream: bool) -> str:
    """Runs a build command, forwarding uv's summary lines; raises a one-line ImageEnvError on failure."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_uv_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            if stream and _UV_PROGRESS.match(line):
                progress("  " + line.strip())
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    output = "\n".join(lines)
    if rc != 0:
        raise ImageEnvError(
            f"building the environment for image {image.name} failed at {phase}: {_uv_error(lines)}",
            details=output,
        )
    return output


def _uv_error(lines: list[str]) -> str:
    """The gist of a failed uv command, on one line."""
    text = [ln.strip() for ln in lines if ln.strip()]
    for i, ln in enumerate(text):
        if ln.lower().startswith(("error:", "×", "x ")):
            gist = " ".join(text[i : i + 4])
            return re.sub(r"\s+", " ", gist)[:600]
    return re.sub(r"\s+", " ", " ".join(text[-3:]))[:600] or "no output"


# -- the environment -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    """The Python a job runs on, standing in for its image."""

    image: ImageInfo
    choice: EnvChoice
    python: Path  # the interpreter to run inside the job
    python_version: str
    prefixes: tuple[Path, ...]  # what the sandbox must mount read-only (env, base interpreter, project env)
    description: str
    key: str | None = None  # cache key (built environments)
    path: Path | None = None  # the env directory (built environments)
    packages: Mapping[str, str] = field(default_factory=dict)  # name -> version, from the lock
    built: bool = False  # this call built it (False: found in the cache, or nothing to build)


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "mlops" / "envs"


def _python_spec(choice: EnvChoice) -> dict[str, str]:
    """The interpreter part of the key, without looking for one: a version as asked ("3.9"), a resolved
    path, or the project's base interpreter for an overlay."""
    if choice.mode == "overlay":
        version = ".".join(map(str, sys.version_info[:3]))
        return {"project_base": os.path.realpath(sys.base_prefix), "version": version}
    if choice.python is None:
        raise ImageEnvError(
            f"the Python of image {choice.image.name} is not known (its tag names none): map the image in "
            f"config {CONFIG_KEY} ({_example_pattern(choice.image)}: {{python: '3.x', requirements: [...]}})"
        )
    if _is_path(choice.python):
        return {"path": os.path.realpath(os.path.expanduser(choice.python))}
    return {"version": choice.python}


def key_inputs(choice: EnvChoice) -> dict[str, Any]:
    """What the env depends on (the Python asked for and the lock's inputs); its hash is the cache key."""
    inputs: dict[str, Any] = {
        "schema": SCHEMA,
        "mode": choice.mode,
        "python": _python_spec(choice),
        "platform": f"{sys.platform}-{os.uname().machine}",
        "requirements": sorted(choice.requirements),
        "only_binary": choice.only_binary,
        "source_packages": sorted(choice.source_packages),
        "excludes": sorted(choice.excludes),
    }
    if choice.mode == "overlay":
        inputs["overlay"] = {
            "prefix": os.path.realpath(sys.prefix),
            "provided": {name: _project_version(name) for name in choice.excludes},
        }
    return inputs


def cache_key(choice: EnvChoice) -> str:
    spec = _python_spec(choice)
    label = ".".join(spec["version"].split(".")[:2]) if "version" in spec else "x"
    blob = json.dumps(key_inputs(choice), sort_keys=True).encode()
    return f"py{label}-{hashlib.sha256(blob).hexdigest()[:16]}"


def _base_interpreter(choice: EnvChoice) -> Interpreter:
    if choice.mode == "overlay":
        return _project_base_interpreter()
    _python_spec(choice)  # raises when the image's Python is not known
    assert choice.python is not None
    return find_interpreter(choice.python, choice.image)


def prepare(
    choice: EnvChoice | str,
    rules: Sequence[ImageEnvRule] = (),
    *,
    cache: Path | None = None,
    on_progress: Progress | None = None,
) -> Environment:
    """The environment for ``choice`` (or for an image URI, chosen with ``rules``), built when not cached.

    A cached env is found from its key alone (no interpreter search); one whose base interpreter is gone
    is rebuilt."""
    if isinstance(choice, str):
        choice = choose(choice, rules)
    progress = on_progress or (lambda _line: None)
    if choice.mode == "project":
        return _project_environment(choice)
    if choice.mode == "interpreter":
        assert choice.python is not None
        interp = find_interpreter(choice.python, choice.image)
        desc = f"{choice.image.name} -> interpreter {interp.path} (Python {interp.version}; {choice.note})"
        return Environment(choice.image, choice, interp.path, interp.version, interp.mounts(), desc)
    root = Path(cache) if cache is not None else cache_root()
    key = cache_key(choice)
    final = root / key
    env = _cached(choice, key, final)
    if env is not None:
        return env
    interp = _base_interpreter(choice)
    root.mkdir(parents=True, exist_ok=True)
    with _key_lock(root, key, progress):
        env = _cached(choice, key, final)
        if env is not None:
            progress(f"reusing {final} (built meanwhile by another process)")
            return env
        _clear_leftovers(root, key, final)
        _build(choice, interp, key, root, final, progress)
    env = _cached(choice, key, final, built=True)
    if env is None:
        raise ImageEnvError(
            f"the environment for image {choice.image.name} vanished after its build ({final})"
        )
    return env


def environment_for(image_uri: str, rules: Sequence[ImageEnvRule] = (), **kwargs: Any) -> Environment:
    return prepare(choose(image_uri, rules), **kwargs)


def _project_environment(choice: EnvChoice) -> Environment:
    proj = project_interpreter()
    extra = f"; {choice.stands_in}" if choice.stands_in else ""
    desc = f"{choice.image.name} -> the project's env py{proj.minor} ({proj.prefix}; {choice.note}{extra})"
    return Environment(choice.image, choice, proj.path, proj.version, proj.mounts(), desc)


def _cached(choice: EnvChoice, key: str, final: Path, built: bool = False) -> Environment | None:
    """The env at ``final`` when it is complete (its metadata written) and its base interpreter is there."""
    try:
        meta = json.loads((final / META).read_text())
        base = meta["interpreter"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not os.path.exists(base["executable"]):
        return None
    packages = dict(meta.get("packages", {}))
    prefixes = [final, Path(base["base_prefix"])]
    if choice.mode == "overlay":
        prefixes += project_interpreter().mounts()
    direct = [_pinned(req, packages) for req in choice.requirements]
    shown = " ".join(direct[:5]) + (f" +{len(direct) - 5} more" if len(direct) > 5 else "")
    kind = "uv overlay on the project's env" if choice.mode == "overlay" else "uv env"
    extra = f"; {choice.stands_in}" if choice.stands_in else ""
    minor = ".".join(base["version"].split(".")[:2])
    desc = f"{choice.image.name} -> {kind} py{minor} {shown} (cache key {key}{extra})"
    return Environment(
        choice.image,
        choice,
        final / "bin" / "python",
        base["version"],
        _outermost([Path(os.path.realpath(p)) for p in prefixes]),
        desc,
        key=key,
        path=final,
        packages=packages,
        built=built,
    )


_REQ_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned(requirement: str, packages: Mapping[str, str]) -> str:
    m = _REQ_NAME.match(requirement)
    if not m:
        return requirement
    version = packages.get(_canon(m.group(1)))
    return f"{m.group(1)}=={version}" if version else requirement


@contextlib.contextmanager
def _key_lock(root: Path, key: str, progress: Progress) -> Iterator[None]:
    fd = os.open(root / f".{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting for another build of {key} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _clear_leftovers(root: Path, key: str, final: Path) -> None:
    """Under the key's lock: temp dirs of builds that were killed, and an env dir without its metadata."""
    for stale in root.glob(f".build-{key}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if final.exists():  # no metadata, or its base interpreter is gone (checked by the caller)
        trash = root / f".trash-{key}-{os.getpid()}"
        os.rename(final, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _build(
    choice: EnvChoice, interp: Interpreter, key: str, root: Path, final: Path, progress: Progress
) -> None:
    uv = find_uv()
    if uv is None:
        raise ImageEnvError(
            f"building the environment for image {choice.image.name} needs uv: pip install uv"
        )
    started = time.monotonic()
    image = choice.image
    progress(f"building the environment for {image.name}: {choice.summary()} (cache key {key})")
    tmp = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=root))
    try:
        common = ["--no-config"]
        binary: list[str] = []
        if choice.only_binary:
            binary = ["--only-binary", ":all:"]
            for name in choice.source_packages:
                binary += ["--no-binary", name]
        (tmp / REQUIREMENTS_FILE).write_text("\n".join(choice.requirements) + "\n")
        compile_cmd = [uv, "pip", "compile", *common, "--python", str(interp.path), "--quiet", "--no-header"]
        compile_cmd += [*binary, "-o", str(tmp / LOCK_FILE), str(tmp / REQUIREMENTS_FILE)]
        if choice.excludes:
            (tmp / EXCLUDES_FILE).write_text("\n".join(choice.excludes) + "\n")
            compile_cmd += ["--excludes", str(tmp / EXCLUDES_FILE)]
        t0 = time.monotonic()
        progress(
            f"resolving {len(choice.requirements)} requirements for Python {interp.version} (uv pip compile)"
        )
        _run(compile_cmd, phase="resolving", image=image, cwd=tmp, progress=progress, stream=False)
        packages = read_lock(tmp / LOCK_FILE)
        progress(f"resolved {len(packages)} packages in {time.monotonic() - t0:.1f} s")

        progress(f"creating a Python {interp.version} venv ({interp.path})")
        venv_cmd = [uv, "venv", *common, "--quiet", "--relocatable", "--allow-existing"]
        venv_cmd += ["--python", str(interp.path), str(tmp)]
        _run(venv_cmd, phase="creating the venv", image=image, cwd=tmp, progress=progress, stream=False)
        python = tmp / "bin" / "python"

        t0 = time.monotonic()
        progress(f"installing {len(packages)} packages (uv pip sync; downloads what uv's cache lacks)")
        sync_cmd = [uv, "pip", "sync", *common, "--python", str(python), *binary, str(tmp / LOCK_FILE)]
        _run(sync_cmd, phase="installing", image=image, cwd=tmp, progress=progress, stream=True)
        progress(f"installed {len(packages)} packages in {time.monotonic() - t0:.1f} s")

        site = Path(_site_packages(python))
        if choice.mode == "overlay":
            (site / OVERLAY_PTH).write_text("\n".join(_project_site_dirs()) + "\n")
        progress("compiling bytecode")
        final_site = final / site.relative_to(tmp)
        # Jobs mount the env read-only: without .pyc every import compiles again (sklearn + pandas: 9 s
        # instead of 3 s). ``-d`` names the final path in tracebacks; packages' own tests are skipped.
        skip_tests = re.escape(str(site)) + r"/(.+/)?tests?/"
        compile_cmd = [str(python), "-m", "compileall", "-q", "-j", "0", "-x", skip_tests]
        subprocess.run(
            [*compile_cmd, "-d", str(final_site), str(site)],
            cwd=tmp,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_uv_env(),
        )  # a module that does not compile for this Python is the package's business, not the build's
        if choice.imports:
            progress(f"checking imports: {', '.join(choice.imports)}")
            code = "".join(f"import {m}\n" for m in choice.imports)
            _run(
                [str(python), "-c", code],
                phase=f"checking imports ({', '.join(choice.imports)})",
                image=image,
                cwd=tmp,
                progress=progress,
                stream=False,
            )
        meta = {
            "key": key,
            "inputs": key_inputs(choice),
            "interpreter": {
                "path": str(interp.path),
                "executable": str(interp.executable),
                "version": interp.version,
                "base_prefix": str(interp.base_prefix),
            },
            "image": image.uri,
            "packages": packages,
            "built_at": time.time(),
            "build_s": round(time.monotonic() - started, 2),
            "builder_pid": os.getpid(),
        }
        (tmp / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
        os.rename(tmp, final)  # atomic: the env appears whole, or not at all
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"done in {time.monotonic() - started:.1f} s: {final}")


def _site_packages(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        stdin=subprocess.DEVNULL,
    )
    return out.stdout.strip()


def _project_site_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(os.path.realpath(paths[k]) for k in ("purelib", "platlib")))


_LOCK_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#\\]+)")


def read_lock(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a ``uv pip compile`` output."""
    found = {}
    for line in Path(path).read_text().splitlines():
        if m := _LOCK_LINE.match(line):
            found[_canon(m.group(1))] = m.group(2)
    return found


def resolve(choice: EnvChoice, dest: Path, *, on_progress: Progress | None = None) -> dict[str, str]:
    """Only the lock of a built choice: ``uv pip compile`` into ``dest`` (nothing installed)."""
    if not choice.builds:
        return {}
    uv = find_uv()
    if uv is None:
        raise ImageEnvError(
            f"resolving the environment for image {choice.image.name} needs uv: pip install uv"
        )
    interp = _base_interpreter(choice)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / REQUIREMENTS_FILE).write_text("\n".join(choice.requirements) + "\n")
    cmd = [uv, "pip", "compile", "--no-config", "--python", str(interp.path), "--quiet", "--no-header"]
    if choice.only_binary:
        cmd += ["--only-binary", ":all:"]
        for name in choice.source_packages:
            cmd += ["--no-binary", name]
    if choice.excludes:
        (dest / EXCLUDES_FILE).write_text("\n".join(choice.excludes) + "\n")
        cmd += ["--excludes", str(dest / EXCLUDES_FILE)]
    cmd += ["-o", str(dest / LOCK_FILE), str(dest / REQUIREMENTS_FILE)]
    progress = on_progress or (lambda _line: None)
    _run(cmd, phase="resolving", image=choice.image, cwd=dest, progress=progress, stream=False)
    return read_lock(dest / LOCK_FILE)


# -- a job's own requirements.txt ----------------------------------------------------------------------

# What the overlay on the project's environment leaves to it: PyPI's Linux torch wheel is a multi-GB CUDA
# build and the project's torch stands in for the image's anyway.
_PROJECT_PROVIDES = ("torch",)


def requirements_lines(text: str) -> tuple[list[str], list[str]]:
    """The requirement specifiers of a ``requirements.txt``, and the lines that cannot be resolved before
    the job (pip options, includes, editable or local paths: no index and no job files are reachable)."""
    kept, skipped = [], []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-") or line.startswith((".", "/", "file:")) or "://" in line.split(";")[0]:
            skipped.append(line)
        else:
            kept.append(line)
    return kept, skipped


def with_requirements(choice: EnvChoice, requirements: Sequence[str], source: str) -> EnvChoice:
    """The environment of ``choice`` once a job's own ``requirements.txt`` (``source``) is installed in it.

    On SageMaker the image's toolkit runs ``pip install -r requirements.txt`` at job start. A job here has
    no network, so the same install happens before the job, on this machine, with uv: a uv env is resolved
    again with the job's requirements added (what pip would upgrade, uv upgrades) plus pip itself; the
    project's environment gets an overlay holding them. Either is cached like any other. In the job the
    toolkit's own ``pip install`` then finds every requirement satisfied. An interpreter mapped as it is
    stays as it is: pip in the job says whether it has them.
    """
    if not requirements or choice.mode == "interpreter":
        return choice
    note = f"{choice.note}; with {source}".lstrip("; ")
    extra = tuple(r for r in requirements if r not in choice.requirements)
    if choice.mode == "uv":
        pip = () if any(_req_name(r) == "pip" for r in choice.requirements + extra) else ("pip",)
        return replace(choice, requirements=choice.requirements + pip + extra, note=note)
    if choice.mode == "project":
        return replace(
            choice, mode="overlay", requirements=extra, excludes=_PROJECT_PROVIDES, imports=(), note=note
        )
    return replace(choice, requirements=choice.requirements + extra, note=note)


def _req_name(requirement: str) -> str:
    m = _REQ_NAME.match(requirement)
    return _canon(m.group(1)) if m else ""


# -- checks and hints ------------------------------------------------------------------------------------


def check(
    image_uri: str | ImageInfo, rules: Sequence[ImageEnvRule] = (), *, cache: Path | None = None
) -> list[str]:
    """One line per thing that would stop the image's environment from being found or built (nothing is
    built or downloaded); ``[]`` when it is ready or can be built."""
    choice = choose(image_uri, rules)
    if choice.mode == "project":
        return []
    if choice.mode == "interpreter":
        assert choice.python is not None
        try:
            find_interpreter(choice.python, choice.image)
        except ImageEnvError as err:
            return [str(err)]
        return []
    root = Path(cache) if cache is not None else cache_root()
    try:
        key = cache_key(choice)
        if _cached(choice, key, root / key) is not None:
            return []
        interp = _base_interpreter(choice)
    except ImageEnvError as err:
        return [str(err)]
    blockers = []
    if find_uv() is None:
        blockers.append(f"building the environment for image {choice.image.name} needs uv: pip install uv")
    if tuple(int(x) for x in interp.version.split(".")[:2]) < (3, 6):
        blockers.append(
            f"uv builds no environment on Python {interp.version} (image {choice.image.name}): map the image "
            f"in config {CONFIG_KEY} to an interpreter that has what it needs ({_example_pattern(choice.image)}: "
            "{python: /path/to/python})"
        )
    if choice.source_packages and not (shutil.which("cc") or shutil.which("gcc")):
        blockers.append(
            f"the environment for image {choice.image.name} builds {', '.join(choice.source_packages)} from "
            "source and needs a C compiler (apt-get install gcc)"
        )
    return blockers


def failure_hint(env: Environment, image: str | ImageInfo | None = None) -> str:
    """One sentence for a job failure that may come from imports or versions: what stood in for which image
    and how to map it to something else."""
    info = env.image if image is None else (image if isinstance(image, ImageInfo) else parse_image_uri(image))
    choice = env.choice
    pattern = _example_pattern(info)
    if choice.mode == "project":
        what = f"the project's environment (Python {env.python_version})"
    elif choice.mode == "interpreter":
        what = f"interpreter {env.python} (Python {env.python_version})"
    else:
        direct = [_pinned(r, env.packages) for r in choice.requirements]
        kind = "a uv overlay on the project's environment" if choice.mode == "overlay" else "a uv environment"
        what = f"{kind} (Python {env.python_version}: {', '.join(direct[:4])}{', ...' if len(direct) > 4 else ''})"
    image_py = f" (Python {info.python_version})" if info.python_version else ""
    extra = f"; {choice.stands_in}" if choice.stands_in else ""
    return (
        f"Image {info.name}{image_py} was not run: {what} stood in for it{extra}; if the failure is an import "
        f"or a version, map the image in config {CONFIG_KEY} to an interpreter or requirements "
        f"({pattern}: {{python: '3.x', requirements: [...]}}) or to project."
    )


# -- paths -----------------------------------------------------------------------------------------------


def _under(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def _outermost(paths: Sequence[Path]) -> tuple[Path, ...]:
    unique = list(dict.fromkeys(paths))
    return tuple(p for p in unique if not any(o != p and _under(p, o) for o in unique))
