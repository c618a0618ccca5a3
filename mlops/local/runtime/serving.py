"""Serving containers: a model's own serving runtime (``GET /ping``, ``POST /invocations`` on 8080) as a
sandboxed host, the way a transform job's instances and a hosted endpoint's instances both run it.

:func:`prepare` resolves once what every host of one container runs (the image's serving command, the
environment standing in for the image, the variables); :func:`host` builds one sandboxed host of it, reached
through the Unix socket ``run/server.sock`` in the one dir it shares with this machine.
"""

from __future__ import annotations

import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.local.images.launch import (
    SERVING_RUN_DIR,
    SUBMIT_DIR_IN_CONTAINER,
    ImageLaunchError,
    Launch,
    serving_launch,
)
from mlops.local.runtime import sandbox
from mlops.local.runtime.common import ML, HostDirs, JobRequestError, StandIn, base_env, service_env, stand_in
from mlops.local.s3store import S3Store

SOCKET = "server.sock"
# What the runtime itself tells a serving container, beside the SAGEMAKER_* variables: it reaches the
# container as set (the sandbox passes only what a request declares, the container contract and these).
_CONTAINER_SETTINGS = ("MAX_CONTENT_LENGTH",)


@dataclass
class ServingContainer:
    """One CreateModel container, resolved: what each of its hosts runs and sees."""

    container: dict
    model_dir: Path
    launch: Launch
    standin: StandIn
    env: dict[str, str]
    declared: set[str]
    instance_type: str | None


def unpack_model(store: S3Store, uri: str, dest: Path, what: str = "model data") -> None:
    """A container's ``ModelDataUrl`` (a tar.gz in the store) unpacked into ``dest``."""
    archive = store.path(uri)
    if not archive.is_file():
        raise JobRequestError(f"{what} {uri} is not in the local store")
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, EOFError) as err:
        raise JobRequestError(f"{what} {uri} is not a readable tar.gz ({err})") from err


def _unpack_submit_dir(store: S3Store | None, uri: str, model_dir: Path) -> Path:
    """An ``s3://.../sourcedir.tar.gz`` SAGEMAKER_SUBMIT_DIRECTORY unpacked beside ``model_dir``."""
    what = "Environment.SAGEMAKER_SUBMIT_DIRECTORY"
    if store is None:
        raise JobRequestError(f"{what} {uri}: no local store to read it from")
    dest = model_dir.with_name(f"{model_dir.name}-sourcedir")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    unpack_model(store, uri, dest, what)
    return dest


def prepare(
    container: dict,
    model_dir: Path,
    *,
    images: dict[str, Any] | None,
    services: Any,
    log_paths: list[Path],
    on_log,
    settings: dict[str, str],
    request_env: dict[str, str] | None = None,
    instance_type: str | None = None,
    store: S3Store | None = None,
) -> ServingContainer:
    """``container`` (its ``Image``, ``Environment``) serving the model unpacked in ``model_dir``.

    ``settings``: what the service tells the container (``SAGEMAKER_BATCH``, ``SAGEMAKER_MAX_PAYLOAD_IN_MB``,
    ...); ``request_env``: the request's own ``Environment`` (a transform job's), over the container's;
    ``store``: where an ``s3://`` ``SAGEMAKER_SUBMIT_DIRECTORY`` of a framework image is read from (unpacked
    beside ``model_dir`` and mounted read-only at ``/opt/ml/code``).
    Raises :class:`JobRequestError` when the image has no local serving runtime or environment."""
    try:
        launch = serving_launch(container, model_dir)
    except ImageLaunchError as err:
        raise JobRequestError(str(err)) from err
    container_env = container.get("Environment") or {}
    submit = str(container_env.get("SAGEMAKER_SUBMIT_DIRECTORY") or "")
    if launch.kind == "handlers-program" and submit.startswith("s3://"):
        launch.mounts.append((SUBMIT_DIR_IN_CONTAINER, _unpack_submit_dir(store, submit, Path(model_dir))))
    user_env = {**service_env(services), **container_env, **(request_env or {})}
    standin = stand_in(str(container["Image"]), images, log_paths, on_log)
    env = base_env(user_env, standin.environment.python)
    env.update(SM_MODEL_DIR=f"{ML}/model", **settings)
    env.update({k: v for k, v in launch.env.items() if k not in user_env})
    declared = {*container_env, *(request_env or {}), *_CONTAINER_SETTINGS, *launch.env}
    return ServingContainer(container, Path(model_dir), launch, standin, env, declared, instance_type)


def host(
    serving: ServingContainer, h: HostDirs, volume_bytes: int | None = None
) -> tuple[sandbox.Instance, Path]:
    """One sandboxed host of ``serving`` in ``h`` and the socket the host's server listens on."""
    run_dir = h.root / "run"
    run_dir.mkdir(exist_ok=True)
    mounts = [
        sandbox.Mount(ML, h.ml),
        sandbox.Mount(f"{ML}/model", serving.model_dir, read_only=True),
        sandbox.Mount(SERVING_RUN_DIR, run_dir),
        *serving.standin.mounts,
        *(sandbox.Mount(target, path, read_only=True) for target, path in serving.launch.mounts),
    ]
    env = dict(serving.env)
    if sandbox.sandbox_mode() == sandbox.NONE:  # the machine's own network: a free port each, not 8080
        from mlops.serving.supervisor import free_port

        env["SAGEMAKER_BIND_TO_PORT"] = str(free_port())
    instance = sandbox.Instance(
        h.host, serving.launch.argv, env, mounts, cwd="/", own_network=True,
        declared_env=serving.declared, instance_type=serving.instance_type,
        layer=h.layer, volume=(h.root, serving.model_dir), volume_bytes=volume_bytes,
    )  # fmt: skip
    return instance, run_dir / SOCKET
