"""EndpointConfig and Endpoint steps, locally: endpoint configs are recorded, endpoints are real servers.

An Endpoint step resolves config -> production variant -> model -> container (a model package ARN from the
local registry, or a ModelDataUrl) -> ``model.tar.gz`` in the store, unpacks it once per content hash and
deploys it blue/green on the local endpoint of that name (``mlops.serving``): the new version starts
beside the serving one and takes the traffic only once it answers, else the old one keeps serving.

A container in ``Mode: MultiModel`` serves the store's dir of its ``ModelDataUrl`` prefix instead: the
model server loads the archive each request's TargetModel names, at its first call.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlops.definition.expressions import resolve
from mlops.errors import MlopsError
from mlops.local.records import Outcome
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home, atomic_write, now


class EndpointStepError(MlopsError):
    """A local endpoint step that cannot resolve its model or start its server."""


def _configs_dir(home: Home) -> Path:
    return home.root / "endpoint-configs"


def create_endpoint_config(home: Home, request: Mapping[str, Any], *, prefix: str) -> dict[str, Any]:
    name = request["EndpointConfigName"]
    record = {
        **request,
        "EndpointConfigArn": f"{prefix}:endpoint-config/{name.lower()}",
        "CreationTime": now(),
    }
    path = _configs_dir(home) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2, default=str))
    return record


def _load_config(home: Home, name: str) -> dict[str, Any]:
    path = _configs_dir(home) / f"{name}.json"
    if not path.is_file():
        raise EndpointStepError(f"endpoint config {name!r} does not exist in {home.root}")
    return json.loads(path.read_text())


def _container(home: Home, model_name: str) -> dict[str, Any]:
    model = next((m for m in reversed(home.registry.models()) if m["name"] == model_name), None)
    if model is None:
        raise EndpointStepError(f"model {model_name!r} was not created in {home.root}")
    request = model["request"] if isinstance(model["request"], dict) else json.loads(model["request"])
    return request.get("PrimaryContainer") or (request.get("Containers") or [{}])[0]


def multi_model_prefix(home: Home, model_name: str) -> str | None:
    """The ``ModelDataUrl`` prefix of a recorded model whose container is ``Mode: MultiModel``."""
    container = _container(home, model_name)
    if container.get("Mode") != "MultiModel":
        return None
    url = container.get("ModelDataUrl")
    if not isinstance(url, str) or not url.startswith("s3://") or not url.endswith("/"):
        raise EndpointStepError(
            f"model {model_name!r} is multi-model: its ModelDataUrl must be an S3 prefix (s3://.../)"
        )
    return url


def _model_data(home: Home, model_name: str) -> tuple[str, str]:
    """(model data S3 URI, a label for the version) of a recorded model."""
    container = _container(home, model_name)
    if container.get("ModelDataUrl"):
        return container["ModelDataUrl"], model_name
    package_arn = container.get("ModelPackageName")
    if not package_arn:
        raise EndpointStepError(f"model {model_name!r} names neither ModelDataUrl nor ModelPackageName")
    package = next((p for p in home.registry.list() if p["arn"] == package_arn), None)
    if package is None:
        raise EndpointStepError(f"model package {package_arn} is not in the local registry")
    if not package.get("model_data_url"):
        raise EndpointStepError(f"model package {package_arn}: no ModelDataUrl")
    if package["approval_status"] != "Approved":
        # SageMaker refuses to deploy what a reviewer has not approved; so do we
        raise EndpointStepError(f"model package {package_arn} is {package['approval_status']}, not Approved")
    return package["model_data_url"], f"{package['group_name']}/{package['version']}"


def unpack_model_data(home: Home, store: S3Store, uri: str) -> Path:
    """``model.tar.gz`` unpacked once per content into ``<home>/models/<sha256[:16]>/``; checked, atomic."""
    try:
        archive = store.path(uri)
    except MlopsError as err:
        raise EndpointStepError(f"model data {uri}: {err}") from err
    if not archive.is_file():
        raise EndpointStepError(f"model data {uri} is not in the local store ({archive})")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()[:16]
    dest = home.root / "models" / digest
    if (dest / "code" / "inference.py").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{digest}-", dir=dest.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(stage, filter="data")
        if not (stage / "code" / "inference.py").is_file():
            raise EndpointStepError(f"model data {uri} has no code/inference.py (the serving handlers)")
        if dest.exists():  # an earlier, incomplete unpack
            shutil.rmtree(dest)
        os.replace(stage, dest)
    except (tarfile.TarError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise EndpointStepError(f"model data {uri} is not a readable tar.gz ({reason})") from err
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
    return dest


def create_or_update_endpoint(
    home: Home,
    store: S3Store,
    request: Mapping[str, Any],
    *,
    prefix: str,
    port: int | None,
    gate: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """Blue/green: ``gate(endpoint name, new version URL)`` raises to keep the serving version."""
    from mlops.serving.supervisor import deploy_blue_green, free_port

    name = request["EndpointName"]
    config = _load_config(home, request["EndpointConfigName"])
    variants = config.get("ProductionVariants") or []
    if not variants:
        raise EndpointStepError(f"endpoint config {config['EndpointConfigName']!r} has no production variant")
    prefix = multi_model_prefix(home, variants[0]["ModelName"])
    if prefix is not None:
        try:
            model_dir = store.path(prefix)
        except MlopsError as err:
            raise EndpointStepError(f"model data {prefix}: {err}") from err
        model_dir.mkdir(parents=True, exist_ok=True)  # an S3 prefix exists once a key is under it
        version = variants[0]["ModelName"]
    else:
        uri, version = _model_data(home, variants[0]["ModelName"])
        model_dir = unpack_model_data(home, store, uri)
    existing = (home.root / "endpoints" / name / "state.json").is_file()
    # without a gate the new version must only answer /ping; the pipeline's SmokeTest step follows
    result = deploy_blue_green(
        name,
        model_dir,
        smoke_test=(lambda url: gate(name, url)) if gate else (lambda url: None),
        port=None if existing else (port or free_port()),
        home=home.root,
        # the variant's instances become server workers; one core stays for the front and the clients
        workers=max(1, min(int(variants[0].get("InitialInstanceCount") or 1), (os.cpu_count() or 2) - 1)),
        version=version,
        async_config=config.get("AsyncInferenceConfig"),
        data_capture=config.get("DataCaptureConfig"),
        multi_model=prefix is not None,
    )
    if result.status != "Succeeded":
        kept = "the previous version keeps serving" if result.endpoint.active else "nothing deployed"
        raise EndpointStepError(f"endpoint {name}: {result.status}: {result.reason} ({kept})")
    return {
        "EndpointName": name,
        "EndpointArn": f"{prefix}:endpoint/{name.lower()}",
        "EndpointConfigName": config["EndpointConfigName"],
        "EndpointStatus": "InService",
        "ProductionVariants": [
            {"VariantName": variants[0].get("VariantName", "AllTraffic"), "ModelVersion": version}
        ],
        "Url": result.endpoint.url,
        "LastModifiedTime": now(),
    }


class EndpointHandler:
    def run(self, step, execution) -> Outcome:
        request = resolve(step.arguments, execution.context())
        options = execution.options
        port = options.endpoint_ports.get(request.get("EndpointName"))
        try:
            props = create_or_update_endpoint(
                execution.home, execution.store, request, prefix=execution.prefix, port=port,
                gate=options.endpoint_gate,
            )  # fmt: skip
        except MlopsError as err:
            return Outcome.failed(str(err), properties={})
        return Outcome.succeeded(props)
