"""Offline, deterministic compile: config + step code -> definition JSON + content-addressed bundles.

Same git tree + same config = byte-identical output: bundle keys derive from content hashes, JSON keys are
sorted, nothing is time-stamped, and the SDK session refuses any AWS call.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.bundles import Bundle, BundleRegistry, manifest_json, write_tarball
from pipelines.config import Config
from pipelines.errors import DefinitionError

log = logging.getLogger(__name__)

BUILD = "model-build"
DEPLOY = "model-deploy"


@dataclass
class Compiled:
    definitions: dict[str, str]  # "model-build" -> definition JSON as CreatePipeline receives it
    pipeline_names: dict[str, str]  # "model-build" -> SageMaker pipeline name
    bundles: list[Bundle]

    def definition(self, key: str = BUILD) -> dict:
        return json.loads(self.definitions[key])


def _canonical(definition: str) -> str:
    return json.dumps(json.loads(definition), indent=2, sort_keys=True) + "\n"


def compile_pipelines(cfg: Config) -> Compiled:
    from pipelines.sdk_session import offline_session, prepare_sdk_environment

    prepare_sdk_environment(cfg.aws.region)
    from pipelines.build import build_pipeline, parameters
    from steps.context import StepContext

    bundles = BundleRegistry(cfg.aws.s3_root)
    session = offline_session(cfg.aws.region, cfg.aws.bucket, bundles)
    ctx = StepContext(cfg=cfg, session=session, bundles=bundles, parameters=parameters(cfg))
    definitions, names = {}, {}
    try:
        definitions[BUILD] = _canonical(build_pipeline(ctx).definition())
        names[BUILD] = cfg.project.build_pipeline
        deploy = _deploy_module()
        if deploy is not None:
            definitions[DEPLOY] = _canonical(deploy.build_pipeline(ctx).definition())
            names[DEPLOY] = cfg.project.deploy_pipeline
    except DefinitionError:
        raise
    except Exception as exc:  # the SDK raises bare ValueError/TypeError for bad step wiring
        raise DefinitionError(
            f"could not build the pipeline definition: {type(exc).__name__}: {exc}"
        ) from exc
    return Compiled(definitions, names, bundles.sorted())


def _deploy_module():
    try:
        from pipelines import deploy
    except ImportError:
        return None
    return deploy


def write_outputs(compiled: Compiled, out_dir: Path) -> list[Path]:
    """Write definitions, manifest and bundle tarballs; all-or-nothing (staged, then renamed in)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".compile-", dir=out_dir))
    written = []
    try:
        (stage / "bundles").mkdir()
        for key, text in compiled.definitions.items():
            (stage / f"{key}.json").write_text(text)
            written.append(out_dir / f"{key}.json")
        for bundle in compiled.bundles:
            write_tarball(bundle, stage / "bundles" / bundle.tarball_name)
        (stage / "manifest.json").write_text(manifest_json(compiled.bundles))
        written.append(out_dir / "manifest.json")
        bundles_dir = out_dir / "bundles"
        bundles_dir.mkdir(exist_ok=True)
        current = {b.tarball_name for b in compiled.bundles}
        for stale in bundles_dir.glob("*.tar.gz"):
            if stale.name not in current:
                stale.unlink()
        for tarball in sorted((stage / "bundles").iterdir()):
            os.replace(tarball, bundles_dir / tarball.name)
        for path in sorted(stage.iterdir()):
            if path.is_file():
                os.replace(path, out_dir / path.name)
    finally:
        for leftover in sorted(stage.rglob("*"), reverse=True):
            leftover.rmdir() if leftover.is_dir() else leftover.unlink()
        stage.rmdir()
    return written
