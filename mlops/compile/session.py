"""An offline SageMaker PipelineSession: compiling never calls AWS and never uploads.

Uploads the SDK would make (ModelTrainer's ``code`` and ``sm_drivers`` channels) become content-addressed
bundles, recorded for ``mlops upsert`` (S3) or ``mlops run`` (the local store) to deliver later.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path, PurePosixPath

from mlops.compile.bundles import BundleRegistry
from mlops.errors import DefinitionError

# The SDK reads these at import time (region) or construction time (role validation, telemetry).
_SDK_ENV = {"SAGEMAKER_VALIDATE_ROLE": "false", "SAGEMAKER_DISABLE_TELEMETRY": "true"}
_SDK_CONFIG = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
_NOISY_LOGGERS = ("sagemaker", "sagemaker.config", "sagemaker.core", "sagemaker.mlops", "sagemaker.train",
                  "sagemaker.serve", "sagemaker.core.workflow.utilities")  # fmt: skip


def prepare_sdk_environment(region: str) -> None:
    """Must run before the first ``import sagemaker``: sagemaker.serve builds a client at import time."""
    os.environ.setdefault("AWS_DEFAULT_REGION", region)
    for key, value in _SDK_ENV.items():
        os.environ.setdefault(key, value)
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"sagemaker\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _quiet_sdk_loggers() -> None:
    """SDK modules set their own loggers to DEBUG/INFO at import; keep them quiet unless --debug."""
    if logging.getLogger().level <= logging.DEBUG:
        return
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("sagemaker"):
            logging.getLogger(name).setLevel(logging.ERROR)


def _validate_sdk_config_once() -> None:
    """The SDK re-validates its defaults config against a JSON schema on every lookup (~60 per compile,
    seconds in total); ours is a constant, so validate it once."""
    from sagemaker.core.config.config_manager import SageMakerConfig

    original = SageMakerConfig.validate_sagemaker_config
    if getattr(original, "_mlops_once", False):
        return
    seen: set[str] = set()

    def validate_once(config=None):
        key = json.dumps(config, sort_keys=True, default=str)
        if key not in seen:
            original(config)
            seen.add(key)

    validate_once._mlops_once = True
    SageMakerConfig.validate_sagemaker_config = staticmethod(validate_once)


def _refuse_network(request, **_):
    raise DefinitionError(
        f"compile is offline but the SageMaker SDK tried to call AWS: {request.method} {request.url}"
    )


def _relative_source_dir(directory: Path, root: Path) -> None:
    """ModelTrainer writes the absolute ``source_dir`` into sourcecode.json (its container drivers never
    read it); relative to the project, the bundle's hash no longer depends on where the checkout lives."""
    config = directory / "sourcecode.json"
    if not config.is_file():
        return
    data = json.loads(config.read_text())
    source = data.get("source_dir")
    if source and Path(source).is_absolute():
        try:
            data["source_dir"] = str(Path(source).resolve().relative_to(root.resolve()))
        except ValueError:
            return
        config.write_text(json.dumps(data))


def offline_session(region: str, bucket: str, bundles: BundleRegistry, *, root: Path):
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    _validate_sdk_config_once()
    _quiet_sdk_loggers()

    # Dummy credentials keep botocore from searching the machine; the hook refuses any request anyway.
    boto_session = boto3.Session(
        region_name=region,
        aws_access_key_id="offline",
        aws_secret_access_key="offline",
        aws_session_token=None,
    )
    boto_session._session.register("before-send", _refuse_network)

    class OfflinePipelineSession(PipelineSession):
        def default_bucket(self):
            return bucket

        def upload_data(self, path, bucket=None, key_prefix="data", callback=None, extra_args=None):
            # ModelTrainer names channels by the last key component: .../input/code, .../input/sm_drivers
            _relative_source_dir(Path(path), root)
            parts = PurePosixPath(key_prefix).parts
            name = f"{parts[0]}-{parts[-1]}" if len(parts) > 1 else (parts[0] if parts else "data")
            return bundles.add(name, path).s3_uri

    return OfflinePipelineSession(
        boto_session=boto_session, default_bucket=bucket, sagemaker_config=_SDK_CONFIG
    )
