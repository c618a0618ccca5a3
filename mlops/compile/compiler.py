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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlops.compile.bundles import Bundle, BundleRegistry, manifest_json, write_tarball
from mlops.errors import DefinitionError
from mlops.project import TOOLKIT_ROOT, BuildInputs, Project

log = logging.getLogger(__name__)


@dataclass
class Compiled:
    definitions: dict[str, str]  # "model-build" -> definition JSON as CreatePipeline receives it
    pipeline_names: dict[str, str]  # "model-build" -> SageMaker pipeline name
    bundles: list[Bundle]
    # The BundleRegistry whose staging directory holds the bundles' files (None once they live elsewhere,
    # e.g. in the compile cache); it is removed on close(), on garbage collection or at exit.
    registry: Any = field(default=None, repr=False, compare=False)

    def close(self) -> None:
        """Remove the staged bundle files (after write_outputs, upsert, or when only definitions were needed)."""
        if self.registry is not None:
            self.registry.discard()

    def __enter__(self) -> Compiled:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def definition(self, key: str) -> dict:
        if key not in self.definitions:
            known = ", ".join(self.definitions)
            raise DefinitionError(f"no pipeline {key!r} in this project (it declares: {known})")
        return json.loads(self.definitions[key])


def _canonical(definition: str) -> str:
    return json.dumps(json.loads(definition), indent=2, sort_keys=True) + "\n"


def compile_pipelines(project: Project, cfg) -> Compiled:
    """Every pipeline the project declares, as the definition JSON CreatePipeline receives."""
    from mlops.compile.session import offline_session, prepare_sdk_environment

    prepare_sdk_environment(cfg.aws.region)
    bundles = BundleRegistry(cfg.aws.s3_root)
    try:
        session = offline_session(cfg.aws.region, cfg.aws.bucket, bundles, root=project.root)
        inputs = BuildInputs(cfg=cfg, session=session, bundles=bundles, root=project.root)
        definitions, names = {}, {}
        try:
            pipelines = project.declaration.build_pipelines(inputs)
            for key in project.pipeline_keys():
                if key not in pipelines:
                    raise DefinitionError(
                        f"the project declares pipeline {key!r} but its builder returned none"
                    )
            for key, pipeline in pipelines.items():
                definitions[key] = _canonical(pipeline.definition())
                names[key] = pipeline.name
        except DefinitionError:
            raise
        except Exception as exc:  # the SDK raises bare ValueError/TypeError for bad step wiring
            raise DefinitionError(
                f"could not build the pipeline definition: {type(exc).__name__}: {exc}"
            ) from exc
        return Compiled(definitions, names, bundles.sorted(), registry=bundles)
    except BaseException:
        bundles.discard()
        raise


def _source_digest(project: Project, cfg) -> str:
    """What a compile depends on: the resolved config, the project's files, the toolkit's code, the SDK."""
    from importlib.metadata import version

    from mlops.compile.bundles import IGNORED_DIRS

    h = hashlib.sha256(cfg.model_dump_json().encode())
    h.update(version("sagemaker").encode())
    h.update(str(project.root).encode())  # bundles record paths relative to it
    trees = [(TOOLKIT_ROOT, TOOLKIT_ROOT / "mlops")]
    trees += [(project.root, p) for p in sorted(project.root.iterdir()) if _is_project_source(p)]
    for base, top in trees:
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file() and not IGNORED_DIRS.intersection(path.parts) and path.suffix != ".pyc":
                h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _is_project_source(path: Path) -> bool:
    """The project's own files: top-level packages and config, not builds, homes or virtualenvs."""
    if path.name.startswith(".") or path.name in ("build", "tests", "bench", "infra", "mlops"):
        return False
    return path.name == "config" or (path.is_dir() and (path / "__init__.py").is_file())


def default_cache_root() -> Path:
    """Shared by every home: entries are keyed by content, so any run of the same tree may reuse them."""
    if os.environ.get("MLOPS_COMPILE_CACHE"):
        return Path(os.environ["MLOPS_COMPILE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mlops" / "compile"


def compile_cached(project: Project, cfg, cache_root: Path | None = None) -> Compiled:
    """``compile_pipelines`` memoised on disk: an unchanged tree and config skip the SDK (seconds) entirely."""
    cache_root = Path(cache_root or default_cache_root())
    entry = cache_root / _source_digest(project, cfg)
    cached = _read_entry(entry)
    if cached is not None:
        return cached
    compiled = compile_pipelines(project, cfg)
    cache_root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=cache_root))
    for b in compiled.bundles:
        shutil.copytree(b.source, stage / "bundles" / b.name / b.sha256)
    (stage / "compiled.json").write_text(
        json.dumps(
            {
                "definitions": compiled.definitions,
                "pipeline_names": compiled.pipeline_names,
                "bundles": [
                    {"name": b.name, "sha256": b.sha256, "s3_uri": b.s3_uri, "files": list(b.files)}
                    for b in compiled.bundles
                ],
            }
        )
    )
    try:
        os.replace(stage, entry)
    except OSError:  # another run cached the same entry first
        shutil.rmtree(stage, ignore_errors=True)
    compiled.close()  # the cache entry holds the files now
    return _read_entry(entry) or compiled


def _read_entry(entry: Path) -> Compiled | None:
    """A complete compile cache entry (index and every bundle's files), or None."""
    index = entry / "compiled.json"
    if not index.is_file():
        return None
    data = json.loads(index.read_text())
    bundles = [
        Bundle(
            b["name"],
            b["sha256"],
            b["s3_uri"],
            entry / "bundles" / b["name"] / b["sha256"],
            tuple(b["files"]),
        )
        for b in data["bundles"]
    ]
    if not all(b.source.is_dir() for b in bundles):
        return None
    return Compiled(data["definitions"], data["pipeline_names"], bundles)


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
