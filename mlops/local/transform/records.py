"""Splitting an input object into records (``SplitType``) and records into request payloads
(``BatchStrategy``, ``MaxPayloadInMB``).

A batch transform never sends an object as-is unless ``SplitType`` is ``None``: it cuts the object at
record boundaries and packs records into requests, so a record is the unit of batching, of size limits
and of the one-output-per-input bookkeeping that joins and ``AssembleWith`` rely on. Binary formats
(RecordIO, TFRecord) keep their framing in the payload: a multi-record request must stay parseable by
the model, and the framing is the only thing that separates the records in it.

Docs: https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TransformInput.html (SplitType),
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html (BatchStrategy,
MaxPayloadInMB).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from mlops.local.transform import TransformError

SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
BATCH_STRATEGIES = ("MultiRecord", "SingleRecord")

# MaxPayloadInMB is read as MiB. The API says "MB" without defining it; SageMaker's own local mode
# (sagemaker-python-sdk, sagemaker/local/data.py) multiplies by 1024 * 1024, and the larger reading
# means a payload accepted here is never refused for size by a stricter service.
MIB = 1024 * 1024

RECORDIO_MAGIC = 0xCED7230A
_RECORDIO_LENGTH_MASK = (1 << 29) - 1  # the upper 3 bits of lrecord are the continuation flag
_TFRECORD_HEADER = 12  # uint64 length + uint32 masked CRC of the length
_TFRECORD_FOOTER = 4  # uint32 masked CRC of the data


class Batch(NamedTuple):
    """One request's body and how many records it carries (the count a joined output must match)."""

    payload: bytes
    record_count: int


def payload_limit(max_payload_mb: int) -> int:
    """``MaxPayloadInMB`` in bytes; 0 stays 0, which means no limit."""
    return max_payload_mb * MIB


def split_records(data: bytes, split_type: str, *, where: str = "input") -> Iterator[bytes]:
    """The records of one (decompressed) object, in order; ``where`` names the object in errors.

    An empty object has no records whatever the split type, so it yields an empty output rather
    than an empty request the model would have to special-case.
    """
    if split_type == "None":
        return iter((data,) if data else ())
    if split_type == "Line":
        return _split_lines(data)
    if split_type == "RecordIO":
        return _split_recordio(data, where)
    if split_type == "TFRecord":
        return _split_tfrecord(data, where)
    raise TransformError(_not_one_of("TransformInput.SplitType", split_type, SPLIT_TYPES))


def batch_records(
    records: Iterable[bytes],
    split_type: str,
    batch_strategy: str,
    max_payload_bytes: int,
    *,
    where: str = "input",
) -> Iterator[Batch]:
    """Pack records into request payloads in input order.

    ``MultiRecord`` fills each payload up to ``max_payload_bytes`` counting the bytes actually sent
    (separators and binary framing included, so the limit holds for the request body, not just the
    data); ``SingleRecord`` sends one record per request. ``max_payload_bytes`` 0 is no limit (the
    API's value for HTTP chunked streaming). A record that can never fit is an error, because
    SageMaker requires ``MaxPayloadInMB`` to be at least the size of a single record.
    """
    if split_type not in SPLIT_TYPES:
        raise TransformError(_not_one_of("TransformInput.SplitType", split_type, SPLIT_TYPES))
    if batch_strategy not in BATCH_STRATEGIES:
        raise TransformError(_not_one_of("BatchStrategy", batch_strategy, BATCH_STRATEGIES))
    separator = b"\n" if split_type == "Line" else b""
    # With SplitType None the object is the record: there is nothing to pack it with.
    one_each = batch_strategy == "SingleRecord" or split_type == "None"
    pending: list[bytes] = []
    size = 0
    for index, record in enumerate(records):
        if max_payload_bytes and len(record) > max_payload_bytes:
            raise TransformError(_too_large(where, index, len(record), max_payload_bytes, split_type))
        if one_each:
            yield Batch(record, 1)
            continue
        grown = size + (len(separator) if pending else 0) + len(record)
        if pending and max_payload_bytes and grown > max_payload_bytes:
            yield Batch(separator.join(pending), len(pending))
            pending, grown = [], len(record)
        pending.append(record)
        size = grown
    if pending:
        yield Batch(separator.join(pending), len(pending))


def iter_batches(
    data: bytes, split_type: str, batch_strategy: str, max_payload_bytes: int, *, where: str = "input"
) -> Iterator[Batch]:
    """``split_records`` then ``batch_records``: the requests one object turns into."""
    records = split_records(data, split_type, where=where)
    return batch_records(records, split_type, batch_strategy, max_payload_bytes, where=where)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord framing uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotated and offset so a CRC of data that holds CRCs stays distinct."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _split_lines(data: bytes) -> Iterator[bytes]:
    if not data:
        return
    pieces = data.split(b"\n")
    if pieces[-1] == b"":  # the newline ending the last line does not start another record
        pieces.pop()
    for piece in pieces:
        yield piece[:-1] if piece.endswith(b"\r") else piece


def _split_recordio(data: bytes, where: str) -> Iterator[bytes]:
    """MXNet RecordIO: magic, lrecord (cflag << 29 | length), data, zero padding to 4 bytes.

    cflag 0 is a whole record; 1, 2..., 3 are the start, middle and end parts of one record, so the
    parts travel together as one record.
    """
    offset, end_of_data, start = 0, len(data), None
    while offset < end_of_data:
        if end_of_data - offset < 8:
            raise TransformError(f"{where}: truncated RecordIO header at byte {offset}")
        magic, lrecord = struct.unpack_from("<II", data, offset)
        if magic != RECORDIO_MAGIC:
            raise TransformError(
                f"{where}: no RecordIO magic number at byte {offset}; the object is not RecordIO or is corrupt"
            )
        cflag, length = lrecord >> 29, lrecord & _RECORDIO_LENGTH_MASK
        end = offset + 8 + length + (-length % 4)
        if end > end_of_data:
            raise TransformError(
                f"{where}: truncated RecordIO record at byte {offset}: it needs {end - offset} bytes, "
                f"the object has {end_of_data - offset} left"
            )
        if cflag in (0, 1) and start is not None:
            raise TransformError(
                f"{where}: RecordIO record at byte {start} has no end part before byte {offset}"
            )
        if cflag in (2, 3) and start is None:
            raise TransformError(f"{where}: RecordIO continuation part at byte {offset} has no start part")
        if cflag == 0:
            yield data[offset:end]
        elif cflag == 1:
            start = offset
        elif cflag == 3:
            yield data[start:end]
            start = None
        elif cflag != 2:
            raise TransformError(
                f"{where}: RecordIO record at byte {offset} has invalid continuation flag {cflag}"
            )
        offset = end
    if start is not None:
        raise TransformError(f"{where}: RecordIO record at byte {start} has no end part")


def _split_tfrecord(data: bytes, where: str) -> Iterator[bytes]:
    """TFRecord: uint64 length, masked CRC of the length, data, masked CRC of the data.

    Only the length's CRC is checked: it is 8 bytes, and it is what catches a misframed object (a
    wrong offset reads garbage as a length). The data CRC is left to the model, which parses the
    payload anyway; checking it in pure Python would cost more than the transform itself.
    """
    offset, end_of_data = 0, len(data)
    while offset < end_of_data:
        if end_of_data - offset < _TFRECORD_HEADER:
            raise TransformError(f"{where}: truncated TFRecord header at byte {offset}")
        length_bytes = data[offset : offset + 8]
        (length,) = struct.unpack("<Q", length_bytes)
        (length_crc,) = struct.unpack_from("<I", data, offset + 8)
        if masked_crc32c(length_bytes) != length_crc:
            raise TransformError(
                f"{where}: TFRecord length at byte {offset} fails its CRC; the object is not TFRecord or is corrupt"
            )
        end = offset + _TFRECORD_HEADER + length + _TFRECORD_FOOTER
        if end > end_of_data:
            raise TransformError(
                f"{where}: truncated TFRecord record at byte {offset}: it needs {end - offset} bytes, "
                f"the object has {end_of_data - offset} left"
            )
        yield data[offset:end]
        offset = end


def _too_large(where: str, index: int, size: int, limit: int, split_type: str) -> str:
    if split_type == "None":
        return (
            f"{where}: the object is {size} bytes, over the MaxPayloadInMB limit of {limit} bytes, and "
            "SplitType None sends it whole; set SplitType or raise MaxPayloadInMB (0 = no limit)"
        )
    return f"{where}: record index {index} is {size} bytes, over the MaxPayloadInMB limit of {limit} bytes"


def _not_one_of(field: str, value: object, allowed: tuple[str, ...]) -> str:
    return f"{field}: {value!r} is not one of {', '.join(allowed)}"


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()
