"""Offline, deterministic compile: config + step code -> definition JSON + content-addressed bundles.

Same git tree + same config = byte-identical output: bundle keys derive from content hashes, JSON keys are
sorted, nothing is time-stamped, and the SDK session refuses any AWS call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlops.compile.bundles import Bundle, BundleRegistry, manifest_json, write_tarball
from mlops.config import Config
from mlops.errors import DefinitionError

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
    from mlops.compile.session import offline_session, prepare_sdk_environment

    prepare_sdk_environment(cfg.aws.region)
    from pipelines.model_build import build_pipeline, parameters
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


def _source_digest(cfg: Config) -> str:
    """What a compile depends on: the resolved config, the project's Python and step code, the SDK."""
    from importlib.metadata import version

    from mlops._root import PROJECT_ROOT
    from mlops.compile.bundles import IGNORED_DIRS

    h = hashlib.sha256(cfg.model_dump_json().encode())
    h.update(version("sagemaker").encode())
    for top in ("mlops", "pipelines", "steps", "config"):
        for path in sorted((PROJECT_ROOT / top).rglob("*")):
            if path.is_file() and not IGNORED_DIRS.intersection(path.parts) and path.suffix != ".pyc":
                h.update(str(path.relative_to(PROJECT_ROOT)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def default_cache_root() -> Path:
    """Shared by every home: entries are keyed by content, so any run of the same tree may reuse them."""
    if os.environ.get("MLOPS_COMPILE_CACHE"):
        return Path(os.environ["MLOPS_COMPILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlops" / "compile"


def compile_cached(cfg: Config, cache_root: Path | None = None) -> Compiled:
    """``compile_pipelines`` memoised on disk: an unchanged tree and config skip the SDK (seconds) entirely."""
    cache_root = Path(cache_root or default_cache_root())
    entry = cache_root / _source_digest(cfg)
    index = entry / "compiled.json"
    if index.is_file():
        data = json.loads(index.read_text())
        bundles = [
            Bundle(b["name"], b["sha256"], b["s3_uri"], entry / "bundles" / b["name"] / b["sha256"], tuple(b["files"]))
            for b in data["bundles"]
        ]
        if all(b.source.is_dir() for b in bundles):
            return Compiled(data["definitions"], data["pipeline_names"], bundles)
    compiled = compile_pipelines(cfg)
    cache_root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=cache_root))
    for b in compiled.bundles:
        shutil.copytree(b.source, stage / "bundles" / b.name / b.sha256)
    (stage / "compiled.json").write_text(
        json.dumps(
            {
                "definitions": compiled.definitions,
                "pipeline_names": compiled.pipeline_names,
                "bundles": [{"name": b.name, "sha256": b.sha256, "s3_uri": b.s3_uri, "files": list(b.files)} for b in compiled.bundles],
            }
        )
    )
    try:
        os.replace(stage, entry)
    except OSError:  # another run cached the same entry first
        shutil.rmtree(stage, ignore_errors=True)
    return compiled


def _deploy_module():
    try:
        from pipelines import model_deploy as deploy
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
