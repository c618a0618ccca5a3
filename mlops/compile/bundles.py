"""Content-addressed code bundles: the same tree always gets the same hash, S3 key and tarball bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from mlops.errors import DefinitionError

IGNORED_DIRS = {"__pycache__", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"}
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp")


@dataclass(frozen=True)
class Bundle:
    """A directory of files that a step downloads from ``s3_uri`` (an S3 prefix ending in '/')."""

    name: str
    sha256: str
    s3_uri: str
    source: Path
    files: tuple[str, ...]

    @property
    def tarball_name(self) -> str:
        return f"{self.name}-{self.sha256[:16]}.tar.gz"

    def manifest_entry(self) -> dict:
        return {
            "name": self.name,
            "sha256": self.sha256,
            "s3_uri": self.s3_uri,
            "tarball": f"bundles/{self.tarball_name}",
            "files": list(self.files),
        }


def _files(root: Path) -> list[str]:
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if any(part in IGNORED_DIRS for part in rel.parts) or path.name.endswith(IGNORED_SUFFIXES):
            continue
        if path.is_file():
            out.append(rel.as_posix())
    return out


def tree_digest(root: Path, files: list[str]) -> str:
    h = hashlib.sha256()
    for rel in files:
        data = (root / rel).read_bytes()
        h.update(rel.encode() + b"\0" + str(len(data)).encode() + b"\0")
        h.update(data)
    return h.hexdigest()


@dataclass
class BundleRegistry:
    """Collects the bundles one compile references; stages their files in a private directory.

    Without an explicit ``staging`` the registry owns a fresh ``mlops-bundles-*`` temp directory and removes
    it on ``discard()``, when the registry is garbage-collected, or at interpreter exit, whichever comes
    first; an explicit ``staging`` directory belongs to the caller and is only removed by ``discard()``.
    """

    s3_root: str
    staging: Path | None = None
    bundles: dict[str, Bundle] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.staging is None:
            self.staging = Path(tempfile.mkdtemp(prefix="mlops-bundles-"))
            self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.staging), True)
        else:
            self.staging = Path(self.staging)
            self._cleanup = None

    def add(self, name: str, source: Path) -> Bundle:
        source = Path(source)
        if source.is_file():
            files, root = [source.name], source.parent
        else:
            files, root = _files(source), source
        if not files:
            raise DefinitionError(f"{source}: no files to package for bundle {name!r}")
        digest = tree_digest(root, files)
        key = f"{name}/{digest}"
        if key in self.bundles:
            return self.bundles[key]
        staged = self.staging / name / digest
        if not staged.exists():
            for rel in files:
                dst = staged / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(root / rel, dst)
        bundle = Bundle(name, digest, f"{self.s3_root}/code/{name}/{digest}/", staged, tuple(files))
        self.bundles[key] = bundle
        return bundle

    def discard(self) -> None:
        """Remove the staged files (after they were copied elsewhere, or on a failed compile)."""
        if self._cleanup is not None:
            self._cleanup()
        else:
            shutil.rmtree(self.staging, ignore_errors=True)

    def sorted(self) -> list[Bundle]:
        return sorted(self.bundles.values(), key=lambda b: (b.name, b.sha256))


def write_tarball(bundle: Bundle, dest: Path) -> None:
    """A byte-reproducible tar.gz: sorted entries, zero mtimes and owners, no gzip timestamp."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in bundle.files:
            data = (bundle.source / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    dest.write_bytes(out.getvalue())


def manifest_json(bundles: list[Bundle]) -> str:
    return json.dumps({"bundles": [b.manifest_entry() for b in bundles]}, indent=2, sort_keys=True) + "\n"
