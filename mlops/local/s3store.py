"""A file-backed S3: ``s3://bucket/key`` is the file ``<root>/bucket/key``.

Every write goes to a temp file under ``<root>/.tmp`` (same file system) and is renamed into place, so a
reader never sees a half-written object and a killed run leaves at most a stray temp file behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from mlops import s3uri
from mlops.errors import MlopsError

log = logging.getLogger(__name__)

_TMP = ".tmp"


class S3StoreError(MlopsError):
    """A URI the store cannot map, or an object that is not there."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; raises on anything that is not an S3 URI."""
    try:
        bucket, key = s3uri.split(uri)
    except s3uri.S3UriError as err:
        raise S3StoreError(str(err)) from None
    if any(part in ("..", ".") for part in key.split("/")):
        raise S3StoreError(f"S3 URI {uri!r} has a '.' or '..' path segment, which the local store refuses")
    return bucket, key


class S3Store:
    """S3 URIs <-> files under ``<root>/<bucket>/<key>``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- mapping ---------------------------------------------------------------------------------------
    def path(self, uri: str) -> Path:
        bucket, key = split_uri(uri)
        return self.root / bucket / key.rstrip("/") if key else self.root / bucket

    def uri(self, path: Path) -> str:
        """The URI of a file under the store root (inverse of :meth:`path`)."""
        rel = Path(path).resolve().relative_to(self.root.resolve())
        return "s3://" + rel.as_posix()

    # -- writes ----------------------------------------------------------------------------------------
    def _tmp_file(self) -> tuple[int, Path]:
        tmp_dir = self.root / _TMP
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="put-")
        return fd, Path(name)

    def _commit(self, tmp: Path, uri: str) -> None:
        dest = self.path(uri)
        if dest == self.path(f"s3://{split_uri(uri)[0]}"):
            tmp.unlink(missing_ok=True)
            raise S3StoreError(f"S3 URI {uri!r} names a bucket, not an object")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir():
                raise S3StoreError(f"cannot write object {uri}: the local store holds objects under that key")
            os.replace(tmp, dest)
        except (NotADirectoryError, FileExistsError) as err:
            raise S3StoreError(
                f"cannot write object {uri}: a parent key is an object in the local store ({err.filename})"
            ) from err
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, uri: str, data: bytes) -> None:
        self.path(uri)  # validate before writing anything
        fd, tmp = self._tmp_file()
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self._commit(tmp, uri)

    def put_file(self, uri: str, src: Path) -> None:
        self.path(uri)
        src = Path(src)
        if not src.is_file():
            raise S3StoreError(f"cannot upload {src} to {uri}: not a file")
        fd, tmp = self._tmp_file()
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
        self._commit(tmp, uri)

    def put_tree(self, prefix: str, src_dir: Path) -> None:
        """Upload every file under ``src_dir``; its key is ``prefix/<relative path>``."""
        self.path(prefix)
        src_dir = Path(src_dir)
        if not src_dir.is_dir():
            raise S3StoreError(f"cannot upload {src_dir} to {prefix}: not a directory")
        base = prefix.rstrip("/")
        for file in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            self.put_file(f"{base}/{file.relative_to(src_dir).as_posix()}", file)

    # -- reads -----------------------------------------------------------------------------------------
    def list(self, prefix: str) -> list[str]:
        """URIs of all objects whose key starts with the prefix's key (S3 string-prefix semantics), sorted."""
        bucket, key = split_uri(prefix)
        bucket_dir = self.root / bucket
        # Walk only the deepest directory the prefix pins down, not the whole bucket.
        head = key.rsplit("/", 1)[0] if "/" in key else ""
        start = bucket_dir / head if head else bucket_dir
        if start.is_file():
            return [f"s3://{bucket}/{head}"] if head.startswith(key) else []
        if not start.is_dir():
            return []
        out = []
        for dirpath, _dirs, files in os.walk(start):
            for name in files:
                rel = (Path(dirpath) / name).relative_to(bucket_dir).as_posix()
                if rel.startswith(key):
                    out.append(f"s3://{bucket}/{rel}")
        return sorted(out)

    def exists(self, uri: str) -> bool:
        return self.path(uri).is_file()

    def relative_keys(self, uri_or_prefix: str) -> list[tuple[str, str]]:
        """``(uri, key relative to the prefix)`` for every object under it; an exact object gets its basename."""
        uris = self.list(uri_or_prefix)
        if not uris:
            return []
        _, key = split_uri(uri_or_prefix)
        out = []
        for uri in uris:
            obj_key = split_uri(uri)[1]
            rel = obj_key[len(key) :].lstrip("/") or obj_key.rsplit("/", 1)[-1]
            out.append((uri, rel))
        return out

    def digest(self, uri_or_prefix: str) -> str:
        """sha256 over (relative key, content) of every object under the URI; stable across stores."""
        h = hashlib.sha256()
        for uri, rel in self.relative_keys(uri_or_prefix):
            h.update(rel.encode() + b"\0")
            with open(self.path(uri), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            h.update(b"\0")
        return h.hexdigest()

    def download(self, uri_or_prefix: str, dest: Path) -> list[Path]:
        """Copy every object under the URI into ``dest`` (keys relative to the prefix); returns the files."""
        return self.download_objects(self.relative_keys(uri_or_prefix), dest)

    def download_objects(self, objects: list[tuple[str, str]], dest: Path) -> list[Path]:
        """Copy ``(uri, relative path)`` pairs into ``dest``, each file written atomically."""
        dest = Path(dest)
        written = []
        for uri, rel in objects:
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-")
            try:
                with os.fdopen(fd, "wb") as out, open(self.path(uri), "rb") as inp:
                    shutil.copyfileobj(inp, out, 1 << 20)
                os.replace(tmp, target)
            finally:
                Path(tmp).unlink(missing_ok=True)
            written.append(target)
        return written
