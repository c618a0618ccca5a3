"""Driving a whole batch transform: objects to instances, records to requests, responses to ``.out``.

The driver knows nothing about serving: ``invoke(payload, content_type, accept) -> bytes`` is the
model (an HTTP call to a container, a function in tests), so the data plane can be checked on its
own. What it keeps from SageMaker: whole objects are spread over instances, each instance sends at
most ``MaxConcurrentTransforms`` requests at once, outputs keep input order, an object that fails
leaves no output while the other objects carry on, and the job fails if any object did.

Docs: https://docs.aws.amazon.com/sagemaker/latest/dg/batch-transform.html and
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
import threading
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from mlops.local.transform import TransformError
from mlops.local.transform.filters import IDENTITY, DataProcessing
from mlops.local.transform.records import (
    BATCH_STRATEGIES,
    SPLIT_TYPES,
    Batch,
    batch_records,
    payload_limit,
    split_records,
)

Invoke = Callable[[bytes, str | None, str | None], bytes]
"""``invoke(payload, content_type, accept) -> response body``; raising means the server refused."""
Progress = Callable[[int, int, int], None]
"""``on_progress(done_objects, total_objects, records)``, called once at the start and per object."""

COMPRESSION_TYPES = ("None", "Gzip")
ASSEMBLE_WITH = ("None", "Line")
MAX_PAYLOAD_MB = 100  # the API's ceiling, also on MaxConcurrentTransforms * MaxPayloadInMB
_MESSAGE_LIMIT = 300  # a server's error page must not swamp the one-line message

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class TransformSpec:
    """The data-plane settings of a CreateTransformJob request, checked when built.

    Defaults are the API's: MultiRecord (what SageMaker's local mode assumes when unset), 6 MB,
    one concurrent request, ``AssembleWith`` None. ``from_request`` reads ``MaxConcurrentTransforms``
    0 as 1: SageMaker would ask the container's execution-parameters, which a data plane cannot.
    """

    content_type: str | None = None
    split_type: str = "None"
    compression: str = "None"
    batch_strategy: str = "MultiRecord"
    max_payload_mb: int = 6
    max_concurrent: int = 1
    accept: str | None = None
    assemble_with: str = "None"
    input_filter: str = IDENTITY
    output_filter: str = IDENTITY
    join_source: str = "None"
    instance_count: int = 1
    processing: DataProcessing = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _choice("TransformInput.SplitType", self.split_type, SPLIT_TYPES)
        _choice("TransformInput.CompressionType", self.compression, COMPRESSION_TYPES)
        _choice("BatchStrategy", self.batch_strategy, BATCH_STRATEGIES)
        _choice("TransformOutput.AssembleWith", self.assemble_with, ASSEMBLE_WITH)
        _integer("MaxPayloadInMB", self.max_payload_mb, 0, MAX_PAYLOAD_MB)
        _integer("MaxConcurrentTransforms", self.max_concurrent, 1, None)
        _integer("TransformResources.InstanceCount", self.instance_count, 1, None)
        if self.max_concurrent * self.max_payload_mb > MAX_PAYLOAD_MB:
            raise TransformError(
                f"MaxConcurrentTransforms * MaxPayloadInMB: {self.max_concurrent} * {self.max_payload_mb} "
                f"exceeds {MAX_PAYLOAD_MB} MB"
            )
        processing = DataProcessing(
            self.input_filter,
            self.output_filter,
            self.join_source,
            content_type=self.content_type,
            accept=self.accept,
            split_type=self.split_type,
            assemble_with=self.assemble_with,
        )
        object.__setattr__(self, "processing", processing)

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> TransformSpec:
        """The spec of a CreateTransformJob request dict (absent or null fields take defaults)."""
        source = _section(request, "TransformInput")
        output = _section(request, "TransformOutput")
        resources = _section(request, "TransformResources")
        processing = _section(request, "DataProcessing")
        concurrent = _get(request, "MaxConcurrentTransforms", 1)
        values = {
            "content_type": _get(source, "ContentType", None),
            "split_type": _get(source, "SplitType", "None"),
            "compression": _get(source, "CompressionType", "None"),
            "batch_strategy": _get(request, "BatchStrategy", "MultiRecord"),
            "max_payload_mb": _get(request, "MaxPayloadInMB", 6),
            "max_concurrent": 1 if concurrent == 0 else concurrent,
            "accept": _get(output, "Accept", None),
            "assemble_with": _get(output, "AssembleWith", "None"),
            "input_filter": _get(processing, "InputFilter", IDENTITY),
            "output_filter": _get(processing, "OutputFilter", IDENTITY),
            "join_source": _get(processing, "JoinSource", "None"),
            "instance_count": _get(resources, "InstanceCount", 1),
        }
        return cls(**values)

    @property
    def max_payload_bytes(self) -> int:
        return payload_limit(self.max_payload_mb)


@dataclass(frozen=True)
class TransformSummary:
    """What a job (or the successful part of a failed one) did; bytes_in counts input after
    decompression, bytes_out the ``.out`` files written."""

    objects: int = 0
    records: int = 0
    batches: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def __add__(self, other: TransformSummary) -> TransformSummary:
        return TransformSummary(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))


class TransformFailed(TransformError):
    """Some objects failed; like SageMaker, the others were still transformed and kept.

    ``str()`` is the first failure (naming its object), with a count of the rest; ``failures`` holds
    them all and ``summary`` what succeeded.
    """

    def __init__(self, failures: Sequence[TransformError], summary: TransformSummary, total: int) -> None:
        self.failures = tuple(failures)
        self.summary = summary
        message = str(self.failures[0])
        if len(self.failures) > 1:
            message += f" (and {len(self.failures) - 1} more of {total} input objects failed)"
        super().__init__(message)


def shard(objects: Sequence[tuple[str, Path]], instance_count: int) -> list[list[tuple[str, Path]]]:
    """Whole objects per instance (SageMaker maps S3 objects to instances by key, never splitting one).

    Round robin over the keys in sorted order: deterministic, every object exactly once, counts
    within one of each other. With more instances than objects the rest stay idle, as on SageMaker.
    """
    _integer("TransformResources.InstanceCount", instance_count, 1, None)
    shards: list[list[tuple[str, Path]]] = [[] for _ in range(instance_count)]
    for position, item in enumerate(sorted(objects, key=lambda item: item[0])):
        shards[position % instance_count].append(item)
    return shards


def run_transform(
    spec: TransformSpec,
    objects: Sequence[tuple[str, Path]],
    out_dir_for: Callable[[str], Path],
    invoke: Invoke | None = None,
    on_progress: Progress | None = None,
    *,
    invoke_for: Callable[[int], Invoke] | None = None,
) -> TransformSummary:
    """Transform ``objects`` ((key, local file) pairs of the input prefix) into
    ``out_dir_for(key) / f"{key}.out"``.

    Pass ``invoke`` to send every instance's requests to one model, or ``invoke_for(instance_index)``
    to give each instance its own (called once per instance that has objects). Instances run in
    parallel, each with ``spec.max_concurrent`` requests in flight. Raises ``TransformFailed`` after
    every object was tried if any failed.
    """
    if (invoke is None) == (invoke_for is None):
        raise TypeError("run_transform takes exactly one of invoke and invoke_for")
    _check_keys(objects)
    progress = _ProgressCounter(len(objects), on_progress)
    work = [(index, part) for index, part in enumerate(shard(objects, spec.instance_count)) if part]

    def run_instance(
        item: tuple[int, list[tuple[str, Path]]],
    ) -> tuple[TransformSummary, list[TransformError]]:
        index, part = item
        model = invoke_for(index) if invoke_for is not None else invoke
        assert model is not None
        return _Instance(spec, model, out_dir_for, progress).run(part)

    if len(work) > 1:
        with ThreadPoolExecutor(len(work), thread_name_prefix="transform-instance") as instances:
            results = list(instances.map(run_instance, work))
    else:
        results = [run_instance(item) for item in work]
    summary = sum((result[0] for result in results), TransformSummary())
    failures = [failure for result in results for failure in result[1]]
    if failures:
        raise TransformFailed(failures, summary, len(objects))
    return summary


class _Instance:
    """One instance's share: objects one after another, each object's batches through a pool of
    ``max_concurrent`` workers, responses written back in input order."""

    def __init__(
        self,
        spec: TransformSpec,
        invoke: Invoke,
        out_dir_for: Callable[[str], Path],
        progress: _ProgressCounter,
    ) -> None:
        self.spec, self.invoke, self.out_dir_for, self.progress = spec, invoke, out_dir_for, progress

    def run(self, objects: Iterable[tuple[str, Path]]) -> tuple[TransformSummary, list[TransformError]]:
        summary, failures = TransformSummary(), []
        with ThreadPoolExecutor(self.spec.max_concurrent, thread_name_prefix="transform-request") as pool:
            for key, path in objects:
                try:
                    done = self._transform(key, path, pool)
                except TransformError as exc:
                    # SageMaker carries on with the other objects; the job fails at the end.
                    failures.append(exc)
                    self.progress.object_done(0)
                else:
                    summary += done
                    self.progress.object_done(done.records)
        return summary, failures

    def _transform(self, key: str, path: Path, pool: ThreadPoolExecutor) -> TransformSummary:
        out_path = _out_path(self.out_dir_for(key), key)
        try:
            return self._write(key, path, out_path, pool)
        except BaseException:
            # An .out from an earlier run would pass for this run's result of an object that failed.
            with contextlib.suppress(OSError):
                out_path.unlink(missing_ok=True)
            raise

    def _write(self, key: str, path: Path, out_path: Path, pool: ThreadPoolExecutor) -> TransformSummary:
        spec, processing = self.spec, self.spec.processing
        data = _read(key, path, spec.compression)
        records: Iterable[bytes] = split_records(data, spec.split_type, where=key)
        originals: list[bytes] = []
        if processing.transforms_output:  # joins need each batch's original records back
            originals = list(records)
            records = originals
        if processing.transforms_input:
            records = (processing.filter_input(r, f"{key}: record index {i}") for i, r in enumerate(records))
        batches = batch_records(
            records, spec.split_type, spec.batch_strategy, spec.max_payload_bytes, where=key
        )

        def send(item: tuple[int, Batch]) -> bytes:
            return self._invoke(key, *item)

        try:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            # A temp file beside the target, renamed into place: a failed object leaves no .out.
            handle, temp_name = tempfile.mkstemp(
                dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".partial"
            )
        except OSError as exc:
            raise TransformError(f"{key}: cannot write {out_path}: {exc.strerror or exc}") from exc
        temp = Path(temp_name)
        record_count = batch_count = 0
        try:
            with os.fdopen(handle, "wb") as out:
                for (first, batch), response in _in_order(
                    pool, send, _numbered(batches), 2 * spec.max_concurrent
                ):
                    if processing.transforms_output:
                        chunk = originals[first : first + batch.record_count]
                        out.write(self._join(processing.assemble(chunk, response, where=key, first=first)))
                    elif spec.assemble_with == "Line":
                        out.write(self._join(list(split_records(response, "Line"))))
                    else:
                        out.write(response)
                    record_count += batch.record_count
                    batch_count += 1
                bytes_out = out.tell()
            os.replace(temp, out_path)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise TransformError(f"{key}: cannot write {out_path}: {exc.strerror or exc}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return TransformSummary(1, record_count, batch_count, len(data), bytes_out)

    def _invoke(self, key: str, first: int, batch: Batch) -> bytes:
        try:
            response = self.invoke(batch.payload, self.spec.content_type, self.spec.accept)
        except Exception as exc:  # whatever the transport raises, the job reports it the same way
            reason = " ".join(str(exc).split()) or type(exc).__name__
            if len(reason) > _MESSAGE_LIMIT:
                reason = reason[:_MESSAGE_LIMIT] + "..."
            raise TransformError(
                f"{key}: the model failed on the {batch.record_count}-record batch from record index {first}: {reason}"
            ) from exc
        if not isinstance(response, bytes | bytearray | memoryview):
            raise TransformError(f"{key}: invoke returned {type(response).__name__}, not bytes")
        return bytes(response)

    def _join(self, records: Sequence[bytes]) -> bytes:
        if self.spec.assemble_with == "Line":
            return b"".join(record + b"\n" for record in records)
        return b"".join(records)


class _ProgressCounter:
    """Serialises progress across instance threads so counts only ever grow."""

    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total, self.callback = total, callback
        self.done = self.records = 0
        self.lock = threading.Lock()
        if callback is not None:
            callback(0, total, 0)

    def object_done(self, records: int) -> None:
        with self.lock:
            self.done += 1
            self.records += records
            if self.callback is not None:
                self.callback(self.done, self.total, self.records)


def _in_order(
    pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterator[T], window: int
) -> Iterator[tuple[T, R]]:
    """``(item, fn(item))`` in input order with at most ``window`` results held: requests overlap,
    output order never changes, and a huge object is not all in memory at once."""
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= window:
                head, future = pending.popleft()
                yield head, future.result()
        while pending:
            head, future = pending.popleft()
            yield head, future.result()
    finally:
        for _, future in pending:  # an earlier failure: requests not yet started are not sent
            future.cancel()


def _numbered(batches: Iterable[Batch]) -> Iterator[tuple[int, Batch]]:
    first = 0
    for batch in batches:
        yield first, batch
        first += batch.record_count


def _read(key: str, path: Path, compression: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TransformError(f"{key}: cannot read {path}: {exc.strerror or exc}") from exc
    if compression != "Gzip":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise TransformError(
            f"{key}: TransformInput.CompressionType is Gzip but the object is not gzip ({exc})"
        ) from exc


def _out_path(root: Path, key: str) -> Path:
    key_path = PurePosixPath(key)
    if not key or key.endswith("/") or key_path.is_absolute() or ".." in key_path.parts:
        raise TransformError(f"input key {key!r} cannot name an output object under the output path")
    return Path(root).joinpath(*key_path.parts[:-1], f"{key_path.name}.out")


def _check_keys(objects: Sequence[tuple[str, Path]]) -> None:
    seen: set[str] = set()
    for key, _ in objects:
        if key in seen:
            raise TransformError(f"input key {key!r} appears twice; each object has one output")
        seen.add(key)
        _out_path(Path("."), key)


def _section(request: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = request.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TransformError(f"{name}: expected an object, got {type(value).__name__}")
    return value


def _get(section: Mapping[str, Any], name: str, default: Any) -> Any:
    value = section.get(name)
    return default if value is None else value


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise TransformError(f"{name}: {value!r} is not one of {', '.join(allowed)}")


def _integer(name: str, value: object, low: int, high: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TransformError(f"{name}: expected an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"at least {low}" if high is None else f"between {low} and {high}"
        raise TransformError(f"{name}: {value} is not {bound}")
