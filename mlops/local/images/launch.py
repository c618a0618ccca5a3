"""What a training container runs when its request names no command: the image's own entrypoint, locally.

SageMaker starts an image's ``ENTRYPOINT`` when ``AlgorithmSpecification.ContainerEntrypoint`` is absent.
Locally there is no image, so the entrypoint is the one the image would run:

- **framework mode** (the request's hyperparameters name ``sagemaker_program``: every framework estimator,
  v2 and v3): the real ``sagemaker-training`` toolkit's ``train`` (``sagemaker_training.cli.train``), with
  ``SAGEMAKER_TRAINING_MODULE`` set as the framework's image sets it (PyTorch and Hugging Face images use
  ``sagemaker_pytorch_container.training:main``, which honours ``torch_distributed``; the distributions
  that launch through mpirun and sshd on every host, MPI, ``pytorchddp``, smdataparallel and XLA, are
  refused before start, naming the hyperparameter). The toolkit downloads ``sagemaker_submit_directory`` through the S3 API,
  installs its ``requirements.txt`` and runs the entry point with the hyperparameters as arguments, as in
  the image;
- **built-in XGBoost** (``sagemaker-xgboost`` without ``sagemaker_program``): algorithm mode on the
  ``xgboost`` package (:mod:`mlops.local.images.xgboost_algorithm`);
- any other built-in algorithm, or an algorithm resource (``AlgorithmName``), is refused before start,
  naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mlops.errors import MlopsError
from mlops.local.images import image_uri

# Where the toolkit's own stand-in scripts are visible inside a job (read-only).
TOOLKIT_IN_JOB = "/opt/mlops/images"
_XGBOOST_ALGORITHM = Path(__file__).with_name("xgboost_algorithm.py")
_HANDLER_SERVING = Path(__file__).with_name("handler_serving.py")
_CONTAINER_HTTP = Path(__file__).with_name("container_http.py")  # imported by both servers, beside them
# The framework image's ``SAGEMAKER_TRAINING_MODULE`` (from the images' Dockerfiles in
# aws/deep-learning-containers: pytorch/training/docker/*/Dockerfile.cpu and huggingface/pytorch/...).
_TRAINING_MODULES = {
    "pytorch": "sagemaker_pytorch_container.training:main",
    "huggingface": "sagemaker_pytorch_container.training:main",
}


# Distributions whose launcher is mpirun over sshd between hosts (sagemaker-pytorch-training's runner
# types MPI and SMDataParallel, the XLA one on Trainium): the hyperparameter the SDK sets -> its name.
_NEEDS_MPI = {
    "sagemaker_mpi_enabled": "distribution mpi",
    "sagemaker_pytorch_ddp_enabled": "distribution pytorchddp",
    "sagemaker_distributed_dataparallel_enabled": "distribution smdistributed dataparallel",
    "sagemaker_pytorch_xla_multi_worker_enabled": "distribution pytorchxla",
}


class ImageLaunchError(MlopsError):
    """A request whose image cannot be run locally (an unsupported built-in algorithm, no command)."""


@dataclass
class Launch:
    """The command a job's hosts run, the variables the image would set, and the files it needs."""

    kind: str  # "entrypoint" | "framework" | "algorithm" | "handlers" | "handlers-program"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    mounts: list[tuple[str, Path]] = field(default_factory=list)  # (container path, host file), read-only
    description: str = ""
    # What SageMaker attaches itself to a built-in algorithm's job when its request names none.
    metric_definitions: list[dict[str, str]] = field(default_factory=list)


def _xgboost_metric_definitions() -> list[dict[str, str]]:
    from mlops.local.images.xgboost_algorithm import METRIC_DEFINITIONS

    return [dict(m) for m in METRIC_DEFINITIONS]


def hyperparameter(hps: dict[str, str], name: str) -> str | None:
    """A hyperparameter as the toolkit reads it: the SDK v2 JSON-encodes every value (``"\\"train.py\\""``)."""
    raw = hps.get(name)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


def training_launch(algorithm_spec: dict, hps: dict[str, str]) -> Launch:
    """How a Training job's hosts start; raises :class:`ImageLaunchError` for what cannot run locally."""
    entrypoint = algorithm_spec.get("ContainerEntrypoint")
    if entrypoint:
        argv = [str(a) for a in entrypoint + list(algorithm_spec.get("ContainerArguments") or [])]
        return Launch("entrypoint", argv, description="the request's ContainerEntrypoint")
    if algorithm_spec.get("AlgorithmName"):
        raise ImageLaunchError(
            f"AlgorithmSpecification.AlgorithmName {algorithm_spec['AlgorithmName']!r}: algorithm resources "
            "(AWS Marketplace or your own) run only on SageMaker; name a TrainingImage with a ContainerEntrypoint"
        )
    image = str(algorithm_spec.get("TrainingImage") or "")
    info = image_uri.parse_image_uri(image)
    program = hyperparameter(hps, "sagemaker_program")
    if program:
        refused = [name for name in _NEEDS_MPI if hyperparameter(hps, name) in ("true", "True", True)]
        if refused:
            raise ImageLaunchError(
                f"HyperParameters.{refused[0]}: {_NEEDS_MPI[refused[0]]} does not run locally (it launches through "
                "mpirun and sshd on every host, which these sandboxes do not have); use torch_distributed "
                "(torchrun), which runs across InstanceCount hosts here"
            )
        # The toolkit's base dir: /opt/ml in a sandbox; rewritten to the host's dir without one (mapped paths).
        env = {"SAGEMAKER_BASE_DIR": "/opt/ml"}
        module = _TRAINING_MODULES.get(info.base_framework or info.framework or "")
        if module:
            env["SAGEMAKER_TRAINING_MODULE"] = module
        return Launch(
            "framework",
            ["python3", "-m", "sagemaker_training.cli.train"],
            env,
            description=f"framework mode through sagemaker-training: {program}",
        )
    if info.algorithm == "xgboost":
        script = f"{TOOLKIT_IN_JOB}/{_XGBOOST_ALGORITHM.name}"
        return Launch(
            "algorithm",
            # the image's version decides the algorithm's defaults and its model file's format
            ["python3", script, "train", "--image", image],
            mounts=[(script, _XGBOOST_ALGORITHM)],
            metric_definitions=_xgboost_metric_definitions(),
            description=f"built-in XGBoost {info.framework_version or ''} in algorithm mode".replace(
                "  ", " "
            ),
        )
    if info.kind == "algorithm":
        raise ImageLaunchError(
            f"built-in algorithm {info.algorithm!r} ({info.name}) does not run locally: only XGBoost does; "
            "run it on SageMaker or train with a script (ContainerEntrypoint or a framework estimator)"
        )
    raise ImageLaunchError(
        f"AlgorithmSpecification.ContainerEntrypoint is missing and image {info.name or '(none)'} is neither "
        "a framework image run with a sagemaker_program hyperparameter nor built-in XGBoost: its own "
        "ENTRYPOINT is not known without the image; name the command to run"
    )


# -- serving (transform jobs) -------------------------------------------------------------------------------
# Where a serving container's host-facing socket lives: the one dir it shares with this machine.
SERVING_RUN_DIR = "/opt/mlops/run"
SERVING_SOCKET = f"{SERVING_RUN_DIR}/server.sock"
SERVING_PORT = 8080
_TOOLKIT_ROOT = Path(__file__).resolve().parents[3]  # the dir holding the ``mlops`` package
# Where an ``s3://.../sourcedir.tar.gz`` SAGEMAKER_SUBMIT_DIRECTORY is unpacked in a serving container, as the
# scikit-learn and XGBoost images' sagemaker-containers unpack it (its ``_env.code_dir``).
SUBMIT_DIR_IN_CONTAINER = "/opt/ml/code"
MODEL_CODE_DIR = "/opt/ml/model/code"  # sagemaker-inference's ``environment.code_dir``
# Framework images whose serving container runs SAGEMAKER_PROGRAM through the handler contract -> the defaults
# handler_serving.py applies (TensorFlow Serving has its own contract: input_handler / output_handler).
_HANDLER_FRAMEWORKS = {
    "sklearn": "sklearn",
    "xgboost": "xgboost",
    "pytorch": "pytorch",
    "mxnet": "generic",
    "huggingface": "generic",
}


def code_dir(env: dict) -> str:
    """Where a serving container finds SAGEMAKER_PROGRAM: the unpacked SAGEMAKER_SUBMIT_DIRECTORY when it is an
    S3 URI, the path it names when it is one (the SDK sets ``/opt/ml/model/code`` for a repacked model), else
    ``/opt/ml/model/code``."""
    submit = str(env.get("SAGEMAKER_SUBMIT_DIRECTORY") or "")
    if submit.startswith("s3://"):
        return SUBMIT_DIR_IN_CONTAINER
    if submit.startswith("/"):
        return submit.rstrip("/") or "/"
    return MODEL_CODE_DIR


def serving_launch(container: dict, model_dir: Path) -> Launch:
    """What a model's serving container runs, from its CreateModel container and its unpacked model data.

    - a framework image (scikit-learn, PyTorch, XGBoost, MXNet, Hugging Face; not TensorFlow Serving) whose
      ``Environment`` names ``SAGEMAKER_PROGRAM``: the framework's handler server
      (:mod:`mlops.local.images.handler_serving`, in the image's own Python) imports that script from the code
      dir (:func:`code_dir`) and serves its ``model_fn`` / ``input_fn`` / ``predict_fn`` / ``output_fn``;
    - built-in XGBoost (``sagemaker-xgboost`` without ``SAGEMAKER_PROGRAM``): the algorithm's ``serve`` mode;
    - a model whose data holds ``code/inference.py`` (the PyTorch serving handlers, as this project's model
      packages do): the toolkit's model server, which implements that handler contract;
    - anything else is refused, naming the image.
    All listen on 8080 in their own network and on :data:`SERVING_SOCKET`, which the host posts to.
    """
    image = str(container.get("Image") or "")
    env = container.get("Environment") or {}
    info = image_uri.parse_image_uri(image)
    framework = _HANDLER_FRAMEWORKS.get(info.framework or "") if info.kind == "framework" else None
    if env.get("SAGEMAKER_PROGRAM") and framework:
        script = f"{TOOLKIT_IN_JOB}/{_HANDLER_SERVING.name}"
        code = code_dir(env)
        return Launch(
            "handlers-program",
            ["python3", script, "--framework", framework, "--code-dir", code],
            {"MLOPS_SERVING_SOCKET": SERVING_SOCKET, "SAGEMAKER_BIND_TO_PORT": str(SERVING_PORT)},
            mounts=[
                (script, _HANDLER_SERVING),
                (f"{TOOLKIT_IN_JOB}/{_CONTAINER_HTTP.name}", _CONTAINER_HTTP),
            ],
            description=f"the {info.short_repository} {info.framework_version or ''} handlers of "
            f"{env['SAGEMAKER_PROGRAM']} in {code} (model_fn, input_fn, predict_fn, output_fn)".replace(
                "  ", " "
            ),
        )
    if info.algorithm == "xgboost" and not env.get("SAGEMAKER_PROGRAM"):
        script = f"{TOOLKIT_IN_JOB}/{_XGBOOST_ALGORITHM.name}"
        return Launch(
            "algorithm",
            ["python3", script, "serve", "--image", image],
            {"MLOPS_SERVING_SOCKET": SERVING_SOCKET, "SAGEMAKER_BIND_TO_PORT": str(SERVING_PORT)},
            mounts=[
                (script, _XGBOOST_ALGORITHM),
                (f"{TOOLKIT_IN_JOB}/{_CONTAINER_HTTP.name}", _CONTAINER_HTTP),
            ],
            description=f"built-in XGBoost {info.framework_version or ''} serving".replace("  ", " "),
        )
    if (Path(model_dir) / "code" / "inference.py").is_file():
        toolkit = "/opt/mlops/mlops"
        return Launch(
            "handlers",
            [
                "python3",
                "-m",
                "mlops.serving.server",
                "--model-dir",
                "/opt/ml/model",
                "--host",
                "0.0.0.0",
                "--uds",
                SERVING_SOCKET,
                "--workers",
                "1",
            ],  # fmt: skip
            {"PYTHONPATH": "/opt/mlops", "SAGEMAKER_BIND_TO_PORT": str(SERVING_PORT)},
            mounts=[(toolkit, _TOOLKIT_ROOT / "mlops")],
            description="the model's code/inference.py handlers (model_fn, input_fn, predict_fn, output_fn)",
        )
    raise ImageLaunchError(
        f"model image {info.name or '(none)'}: no local serving runtime for it (built-in XGBoost, a framework "
        "image whose Environment names SAGEMAKER_PROGRAM, or model data with code/inference.py, are served "
        "locally); run this transform on SageMaker"
    )
