"""Training data channels delivered as SageMaker delivers them.

- ``File``: objects copied into ``/opt/ml/input/data/<channel>`` (sharded by key when asked).
- ``FastFile``: the store directory bound read-only at the channel path; nothing is copied.
- ``Pipe``: a FIFO per epoch at ``/opt/ml/input/data/<channel>_<epoch>``; a writer thread streams the
  objects into it; epoch N+1's FIFO appears as soon as a reader has opened epoch N. The FIFOs are made and
  opened through a fd of the data dir taken before the job starts, with O_NOFOLLOW, and checked to be FIFOs:
  a job that swaps one for a symlink or a file gets its channel stopped and the job failed, never a write
  to what the link names.
- ``FileSystemDataSource`` (EFS, FSx for Lustre): the local dir that ``file_systems[FileSystemId]`` names,
  with ``DirectoryPath`` resolved under it (and refused if it resolves outside it), bound at the channel path.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

from mlops.local.runtime import sandbox
from mlops.local.runtime.common import ML, JobRequestError, get, s3_objects, s3_uri, shard
from mlops.local.s3store import S3Store

log = logging.getLogger(__name__)

DATA = f"{ML}/input/data"
MODES = ("File", "FastFile", "Pipe")


@dataclass
class Channel:
    name: str
    mode: str
    uri: str | None = None
    data_type: str = "S3Prefix"
    distribution: str = "FullyReplicated"
    fs_dir: Path | None = None
    fs_read_only: bool = True
    config: dict = field(default_factory=dict)  # this channel's entry in inputdataconfig.json


def parse_channels(request: dict, file_systems: dict[str, str] | None) -> list[Channel]:
    """Checks every channel before anything runs; names the channel and field on error."""
    default_mode = get(request, "AlgorithmSpecification.TrainingInputMode", str, "File")
    channels, seen = [], set()
    for i, item in enumerate(get(request, "InputDataConfig", list, [])):
        where = f"InputDataConfig[{i}]"
        name = get(item, "ChannelName", str, where=where)
        if name in seen or not name or "/" in name:
            raise JobRequestError(f"{where}.ChannelName = {name!r} is empty, repeated or contains '/'")
        seen.add(name)
        mode = item.get("InputMode") or default_mode
        if mode not in MODES:
            raise JobRequestError(f"{where} ({name}): InputMode {mode!r} is not one of {', '.join(MODES)}")
        if item.get("CompressionType", "None") not in ("None", None):
            raise JobRequestError(
                f"{where} ({name}): CompressionType {item['CompressionType']!r} is not supported"
            )
        source = get(item, "DataSource", dict, where=where)
        ch = Channel(name, mode)
        if "S3DataSource" in source:
            s3 = source["S3DataSource"]
            ch.uri = s3_uri(
                get(s3, "S3Uri", str, where=f"{where}.DataSource.S3DataSource"), f"{where} ({name}) S3Uri"
            )
            ch.data_type = s3.get("S3DataType", "S3Prefix")
            ch.distribution = s3.get("S3DataDistributionType", "FullyReplicated")
        elif "FileSystemDataSource" in source:
            fs = source["FileSystemDataSource"]
            fs_id = get(fs, "FileSystemId", str, where=f"{where}.DataSource.FileSystemDataSource")
            if not file_systems or fs_id not in file_systems:
                raise JobRequestError(
                    f"{where} ({name}): file system {fs_id} is not mapped to a local directory "
                    "(set it in config under local file_systems)"
                )
            root = Path(file_systems[fs_id])
            ch.fs_dir = root / str(fs.get("DirectoryPath", "/")).lstrip("/")
            if not ch.fs_dir.resolve().is_relative_to(root.resolve()):
                raise JobRequestError(
                    f"{where} ({name}): DirectoryPath {fs.get('DirectoryPath')!r} resolves outside "
                    f"{root} (file system {fs_id})"
                )
            if not ch.fs_dir.is_dir():
                raise JobRequestError(
                    f"{where} ({name}): {ch.fs_dir} (file system {fs_id}) is not a directory"
                )
            ch.fs_read_only = fs.get("FileSystemAccessMode", "ro") != "rw"
            ch.mode = "File"
        else:
            raise JobRequestError(f"{where} ({name}): DataSource needs S3DataSource or FileSystemDataSource")
        ch.config = {
            "TrainingInputMode": ch.mode,
            "S3DistributionType": ch.distribution,
            "RecordWrapperType": item.get("RecordWrapperType", "None"),
        }
        if item.get("ContentType"):
            ch.config["ContentType"] = item["ContentType"]
        channels.append(ch)
    return channels


class PipeFeeder:
    """Feeds ``<dir>/<channel>_<epoch>`` FIFOs until stopped; one thread per (host, channel).

    ``error`` is set (one line naming the FIFO) when the job replaced a FIFO with something else; the
    feeder then stops and the job fails with it.
    """

    def __init__(self, data_dir: Path, channel: str, objects: list[Path]):
        self.data_dir, self.channel, self.objects = data_dir, channel, objects
        self.stop = threading.Event()
        self.epochs = 0
        self.error: str | None = None
        # The data dir as it is now, before the job runs: a job renaming it or swapping it for a symlink
        # cannot redirect the FIFOs (closed by close()).
        self.dir_fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self.fifo(0)
        self.thread = threading.Thread(target=self._run, name=f"pipe-{channel}", daemon=True)

    def _name(self, epoch: int) -> str:
        return f"{self.channel}_{epoch}"

    def _where(self, epoch: int) -> str:
        return f"channel {self.channel}: {DATA}/{self._name(epoch)}"

    def fifo(self, epoch: int) -> str:
        name = self._name(epoch)
        try:
            os.mkfifo(name, dir_fd=self.dir_fd)
        except FileExistsError:
            pass  # checked to be a FIFO when opened
        return name

    def _open_writer(self, epoch: int) -> int | None:
        name = self._name(epoch)
        while not self.stop.is_set():
            try:
                fd = os.open(
                    name, os.O_WRONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd
                )
            except OSError as err:
                if err.errno == errno.ENXIO:  # no reader yet
                    self.stop.wait(0.05)
                    continue
                if err.errno == errno.ENOENT:  # the job removed it: SageMaker's FIFO is not optional
                    self._fail(f"{self._where(epoch)} was removed by the job; not recreated")
                elif err.errno == errno.ELOOP:
                    self._fail(f"{self._where(epoch)} was replaced by a symlink; nothing written to it")
                else:
                    self._fail(f"{self._where(epoch)} cannot be opened ({err.strerror}); nothing written")
                return None
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                os.close(fd)
                self._fail(f"{self._where(epoch)} was replaced by a file that is not a FIFO; nothing written")
                return None
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
            return fd
        return None

    def _fail(self, message: str) -> None:
        self.error = message
        log.warning("%s", message)
        self.stop.set()

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def _run(self) -> None:
        epoch = 0
        while not self.stop.is_set():
            self.fifo(epoch)
            fd = self._open_writer(epoch)
            if fd is None:
                return
            # The next epoch's FIFO exists before this one hits EOF, so a reader never races its creation.
            self.fifo(epoch + 1)
            try:
                with os.fdopen(fd, "wb") as out:
                    for obj in self.objects:
                        with open(obj, "rb") as inp:
                            while chunk := inp.read(1 << 20):
                                out.write(chunk)
            except BrokenPipeError:
                pass  # the reader stopped early; SageMaker moves on to the next epoch too
            self.epochs = epoch = epoch + 1


def deliver(
    channels: list[Channel], store: S3Store, ml_dir: Path, index: int, count: int
) -> tuple[list[sandbox.Mount], list[PipeFeeder]]:
    """Puts the channels in place for instance ``index``; returns extra mounts and (unstarted) pipe feeders."""
    data_dir = ml_dir / "input" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    mounts, feeders = [], []
    for ch in channels:
        target = f"{DATA}/{ch.name}"
        if ch.fs_dir is not None:
            (data_dir / ch.name).mkdir(exist_ok=True)
            mounts.append(sandbox.Mount(target, ch.fs_dir, read_only=ch.fs_read_only))
            continue
        where = f"channel {ch.name}"
        objects = shard(s3_objects(store, ch.uri, ch.data_type, where), index, count, ch.distribution, where)
        if not objects:
            raise JobRequestError(f"channel {ch.name}: no S3 objects found under {ch.uri}")
        if ch.mode == "File":
            store.download_objects(objects, data_dir / ch.name)
        elif ch.mode == "FastFile":
            src = store.path(ch.uri)
            if not src.is_dir() or ch.data_type != "S3Prefix" or ch.distribution != "FullyReplicated":
                raise JobRequestError(
                    f"channel {ch.name}: FastFile needs a FullyReplicated S3Prefix that is a 'directory' "
                    f"(ends at a '/'), got {ch.uri}"
                )
            (data_dir / ch.name).mkdir(exist_ok=True)
            mounts.append(sandbox.Mount(target, src, read_only=True))
        else:
            feeders.append(PipeFeeder(data_dir, ch.name, [store.path(uri) for uri, _ in objects]))
    return mounts, feeders
