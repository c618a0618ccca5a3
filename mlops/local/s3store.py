"""A file-backed S3: ``s3://bucket/key`` is the file ``<root>/bucket/key``.

Every write goes to a temp file under ``<root>/.tmp`` (same file system) and is renamed into place, so a
reader never sees a half-written object and a killed run leaves at most a stray temp file behind.

Confinement: a key maps to a path only under ``s3uri.split_confined``'s rule, and the path, once resolved,
must lie inside the root. Trees that a job wrote (its outputs) are walked by directory fd, never following a
symlink: a symlink or a special file in them is skipped and reported, never dereferenced on the host.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from mlops import s3uri
from mlops.errors import MlopsError

log = logging.getLogger(__name__)

_TMP = ".tmp"
# rclone serve s3 writes an upload beside its key under this prefix and renames it into place when done.
S3_API_TEMP_PREFIX = ".rclone_temp_"
_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO a job left behind must not hang the executor (it is refused by fstat next).
_FILE_NOFOLLOW = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
SkipCallback = Callable[[str, str], None]  # (relative path, why)


class S3StoreError(MlopsError):
    """A URI the store cannot map, or an object that is not there."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ``("bucket", "a/b")``; raises on anything that is not an S3 URI or whose key
    has an empty, ``.`` or ``..`` segment (``s3uri.split_confined``)."""
    try:
        return s3uri.split_confined(uri)
    except s3uri.S3UriError as err:
        raise S3StoreError(str(err)) from None


def relative_key_problem(rel: object) -> str | None:
    """Why ``rel`` cannot be a path relative to a directory (absolute, empty, ``.``/``..``), or None."""
    if not isinstance(rel, str) or not rel or rel.endswith("/"):
        return "not a relative file name"
    return s3uri.key_problem(rel)


def open_dir_nofollow(base: Path, path: Path) -> int:
    """An fd of directory ``path``, reached from ``base`` one component at a time without following a
    symlink; raises S3StoreError naming the path when one is in the way (or it is not under ``base``)."""
    base, path = Path(base), Path(path)
    try:
        rel = path.relative_to(base)
    except ValueError:
        raise S3StoreError(f"{path} is not under {base}") from None
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in rel.parts:
            if part == "..":
                raise S3StoreError(f"{path}: '..' is not followed")
            nfd = os.open(part, _DIR_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except OSError as err:
        os.close(fd)
        why = "a symlink is in the way" if err.errno == errno.ELOOP else err.strerror
        raise S3StoreError(f"{path} is not a directory reached without symlinks ({why})") from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_nofollow(base: Path, path: Path, limit: int) -> bytes:
    """At most the last ``limit`` bytes of the regular file ``path``, opened under ``base`` without
    following a symlink on the way; raises S3StoreError (symlink, FIFO, device, missing) naming it."""
    path = Path(path)
    dir_fd = open_dir_nofollow(base, path.parent)
    try:
        try:
            fd = os.open(path.name, _FILE_NOFOLLOW, dir_fd=dir_fd)
        except OSError as err:
            why = "a symlink" if err.errno == errno.ELOOP else err.strerror
            raise S3StoreError(f"{path} was not read ({why})") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise S3StoreError(f"{path} was not read (not a regular file)")
        if st.st_size > limit:
            f.seek(st.st_size - limit)
        return f.read(limit)


def walk_nofollow(top_fd: int, on_skip: SkipCallback) -> Iterator[tuple[str, int, str]]:
    """``(relative path, dir fd, name)`` of every regular file under the directory ``top_fd``, sorted per
    directory, walked by fd: symlinks (to files or directories) and special files are passed to
    ``on_skip`` and never followed or opened. The dir fd is valid only until the next item."""
    for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top_fd, follow_symlinks=False):
        prefix = "" if dirpath == "." else dirpath[2:] + "/"
        keep = []
        for name in sorted(dirnames):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                keep.append(name)
            else:
                on_skip(prefix + name, "a symlink, not followed")
        dirnames[:] = keep
        for name in sorted(filenames):
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISLNK(st.st_mode):
                on_skip(prefix + name, "a symlink, not followed")
            elif not stat.S_ISREG(st.st_mode):
                on_skip(prefix + name, "not a regular file")
            else:
                yield prefix + name, dir_fd, name


def _log_skip(rel: str, why: str) -> None:
    log.warning("skipped %s: %s", rel, why)


class S3Store:
    """S3 URIs <-> files under ``<root>/<bucket>/<key>``."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- mapping ---------------------------------------------------------------------------------------
    def path(self, uri: str) -> Path:
        """The file behind ``uri``; refused unless it resolves (symlinks and all) inside the root."""
        bucket, key = split_uri(uri)
        path = self.root / bucket / key.rstrip("/") if key else self.root / bucket
        root = self.root.resolve()
        resolved = path.resolve()
        if not resolved.is_relative_to(root) or resolved == root or resolved.is_relative_to(root / _TMP):
            raise S3StoreError(f"S3 URI {uri!r} resolves to {resolved}, outside the local store {root}")
        return path

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
        with open(src, "rb") as inp:
            self._put_stream(uri, inp)

    def put_opened(self, uri: str, name: str, dir_fd: int) -> None:
        """Upload the regular file ``name`` in directory ``dir_fd``, opened without following a symlink."""
        self.path(uri)
        try:
            fd = os.open(name, _FILE_NOFOLLOW, dir_fd=dir_fd)
        except OSError as err:
            why = "a symlink" if err.errno == errno.ELOOP else err.strerror
            raise S3StoreError(f"cannot upload {name} to {uri}: {why}") from None
        with os.fdopen(fd, "rb") as inp:
            if not stat.S_ISREG(os.fstat(inp.fileno()).st_mode):
                raise S3StoreError(f"cannot upload {name} to {uri}: not a regular file")
            os.set_blocking(inp.fileno(), True)
            self._put_stream(uri, inp)

    def _put_stream(self, uri: str, inp) -> None:
        fd, tmp = self._tmp_file()
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(inp, out, 1 << 20)
        self._commit(tmp, uri)

    def put_tree(
        self, prefix: str, src_dir: Path, *, base: Path | None = None, on_skip: SkipCallback | None = None
    ) -> list[str]:
        """Upload every regular file under ``src_dir``; its key is ``prefix/<relative path>``.

        Nothing is followed: ``src_dir`` must be reached from ``base`` (default: its parent) without a
        symlink, and symlinks or special files inside it are skipped and passed to ``on_skip`` (default: a
        warning in this log). Returns the relative paths skipped.
        """
        self.path(prefix)
        src_dir = Path(src_dir)
        try:
            top = open_dir_nofollow(Path(base) if base is not None else src_dir.parent, src_dir)
        except S3StoreError as err:
            raise S3StoreError(f"cannot upload {src_dir} to {prefix}: not a directory ({err})") from None
        skipped: list[str] = []

        def skip(rel: str, why: str) -> None:
            skipped.append(rel)
            (on_skip or _log_skip)(rel, why)

        out = prefix.rstrip("/")
        try:
            for rel, dir_fd, name in walk_nofollow(top, skip):
                self.put_opened(f"{out}/{rel}", name, dir_fd)
        finally:
            os.close(top)
        return skipped

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
                if name.startswith(S3_API_TEMP_PREFIX):
                    continue  # an upload through the S3 API still in flight (or left by a killed server)
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
        dest_root = dest.resolve()
        written = []
        for uri, rel in objects:
            problem = relative_key_problem(rel)
            target = dest / rel
            if problem is None and not target.resolve().is_relative_to(dest_root):
                problem = "it resolves outside the destination"
            if problem:
                raise S3StoreError(f"cannot download {uri} as {rel!r} into {dest}: {problem}")
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
