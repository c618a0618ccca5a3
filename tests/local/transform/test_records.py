"""Splitting objects into records and packing records into payloads, on real framed bytes."""

from __future__ import annotations

import struct

import pytest

from mlops.local.transform import TransformError
from mlops.local.transform.records import (
    MIB,
    RECORDIO_MAGIC,
    Batch,
    batch_records,
    crc32c,
    iter_batches,
    masked_crc32c,
    payload_limit,
    split_records,
)


def recordio_part(data: bytes, cflag: int = 0) -> bytes:
    """One MXNet RecordIO frame, written from the format description rather than the reader."""
    header = struct.pack("<II", RECORDIO_MAGIC, (cflag << 29) | len(data))
    return header + data + b"\0" * (-len(data) % 4)


def recordio_multipart(parts: list[bytes]) -> bytes:
    flags = [1] + [2] * (len(parts) - 2) + [3]
    return b"".join(recordio_part(part, flag) for part, flag in zip(parts, flags, strict=True))


def tfrecord_frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def read_recordio_payload(frame: bytes) -> bytes:
    """The data of every part of one (possibly multi-part) framed record, concatenated."""
    data, offset = b"", 0
    while offset < len(frame):
        magic, lrecord = struct.unpack_from("<II", frame, offset)
        assert magic == RECORDIO_MAGIC
        length = lrecord & ((1 << 29) - 1)
        data += frame[offset + 8 : offset + 8 + length]
        offset += 8 + length + (-length % 4)
    return data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"a,1\nb,2\n", [b"a,1", b"b,2"]),
        (b"a,1\nb,2", [b"a,1", b"b,2"]),  # no final newline
        (b"a,1\r\nb,2\r\n", [b"a,1", b"b,2"]),  # CRLF files
        (b"a\n\nb\n", [b"a", b"", b"b"]),  # an inner blank line is a record: outputs stay aligned
        (b"\n", [b""]),
        (b"", []),
        (b"x\ry\n", [b"x\ry"]),  # only a trailing CR belongs to the line ending
    ],
)
def test_line_split(data, expected):
    assert list(split_records(data, "Line")) == expected


@pytest.mark.parametrize(
    ("data", "expected"), [(b"a\nb\n", [b"a\nb\n"]), (b"\x00\xff", [b"\x00\xff"]), (b"", [])]
)
def test_none_split_is_the_whole_object(data, expected):
    assert list(split_records(data, "None")) == expected


def test_recordio_round_trip_keeps_framing_and_multipart_records_whole():
    payloads = [b"", b"a", b"abc", b"abcd", b"abcde", bytes(range(256)) * 4]
    multipart = [b"first-part", b"mid", b"last part!"]
    frames = [recordio_part(p) for p in payloads]
    frames.insert(2, recordio_multipart(multipart))
    split = list(split_records(b"".join(frames), "RecordIO", where="in.rec"))
    assert split == frames
    assert [read_recordio_payload(f) for f in split] == payloads[:2] + [b"".join(multipart)] + payloads[2:]
    # MultiRecord concatenates framed records, so the model can split the payload again.
    batches = list(batch_records(split, "RecordIO", "MultiRecord", 0))
    assert batches == [Batch(b"".join(frames), len(frames))]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (recordio_part(b"ok") + b"\x00" * 8, "no RecordIO magic number at byte 12"),
        (recordio_part(b"abcdef")[:-3], "truncated RecordIO record at byte 0"),
        (recordio_part(b"ok") + recordio_part(b"x")[:5], "truncated RecordIO header at byte 12"),
        (recordio_part(b"tail", 3), "continuation part at byte 0 has no start part"),
        (recordio_part(b"head", 1), "record at byte 0 has no end part"),
        (
            recordio_part(b"head", 1) + recordio_part(b"whole"),
            "record at byte 0 has no end part before byte 12",
        ),
        (recordio_part(b"odd", 5), "invalid continuation flag 5"),
    ],
)
def test_recordio_framing_errors_name_object_and_offset(data, message):
    with pytest.raises(TransformError, match=message) as info:
        list(split_records(data, "RecordIO", where="data/part-1.rec"))
    assert str(info.value).startswith("data/part-1.rec: ")


def test_tfrecord_round_trip_keeps_framing():
    payloads = [b"", b"x", b"example" * 100, bytes(range(256))]
    frames = [tfrecord_frame(p) for p in payloads]
    split = list(split_records(b"".join(frames), "TFRecord", where="in.tfrecord"))
    assert split == frames
    for frame, payload in zip(split, payloads, strict=True):
        (length,) = struct.unpack_from("<Q", frame)
        assert frame[12 : 12 + length] == payload
        assert struct.unpack_from("<I", frame, 12 + length)[0] == masked_crc32c(payload)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (tfrecord_frame(b"abc")[:-1], "truncated TFRecord record at byte 0"),
        (tfrecord_frame(b"abc") + b"\x01" * 5, "truncated TFRecord header at byte 19"),
        (b"\x04" + tfrecord_frame(b"abc")[1:], "TFRecord length at byte 0 fails its CRC"),  # a flipped length
        (tfrecord_frame(b"ok") + b"not a tfrecord at all", "TFRecord length at byte 18 fails its CRC"),
    ],
)
def test_tfrecord_framing_errors_name_object_and_offset(data, message):
    with pytest.raises(TransformError, match=message) as info:
        list(split_records(data, "TFRecord", where="shard-0.tfrecord"))
    assert str(info.value).startswith("shard-0.tfrecord: ")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789", 0xE3069283),  # the CRC-32C check value
        (b"", 0),
        (b"\x00" * 32, 0x8A9136AA),  # RFC 3720 (iSCSI) test vectors
        (b"\xff" * 32, 0x62A8AB43),
    ],
)
def test_crc32c_known_vectors(data, expected):
    assert crc32c(data) == expected


RECORDS = [b"r%08d" % i for i in range(7)]  # 9 bytes each


@pytest.mark.parametrize(
    ("strategy", "limit", "sizes"),
    [
        ("MultiRecord", 29, [3, 3, 1]),  # 9 + 1 + 9 + 1 + 9 = 29: three fit exactly
        ("MultiRecord", 28, [2, 2, 2, 1]),  # one byte less and the third no longer fits
        ("MultiRecord", 9, [1] * 7),
        ("MultiRecord", 0, [7]),  # 0 = no limit
        ("SingleRecord", 1000, [1] * 7),
        ("SingleRecord", 0, [1] * 7),
    ],
)
def test_line_batching_fills_up_to_the_limit_in_order(strategy, limit, sizes):
    batches = list(batch_records(RECORDS, "Line", strategy, limit))
    assert [b.record_count for b in batches] == sizes
    assert all(limit == 0 or len(b.payload) <= limit for b in batches)
    assert b"\n".join(b.payload for b in batches) == b"\n".join(RECORDS)
    assert not any(b.payload.endswith(b"\n") for b in batches)


def test_binary_batches_concatenate_frames_and_count_framing_against_the_limit():
    frames = [tfrecord_frame(b"x" * 10) for _ in range(5)]  # 26 bytes each
    batches = list(batch_records(frames, "TFRecord", "MultiRecord", 52))
    assert batches == [Batch(frames[0] + frames[1], 2), Batch(frames[2] + frames[3], 2), Batch(frames[4], 1)]


def test_a_record_over_the_limit_names_object_index_and_size():
    records = [b"small", b"x" * 40, b"small"]
    with pytest.raises(TransformError) as info:
        list(batch_records(records, "Line", "MultiRecord", 32, where="big.csv"))
    assert str(info.value) == "big.csv: record index 1 is 40 bytes, over the MaxPayloadInMB limit of 32 bytes"


def test_an_unsplit_object_over_the_limit_fails_unless_the_limit_is_zero():
    data = b"a\n" * 20
    with pytest.raises(TransformError, match=r"^whole\.csv: the object is 40 bytes, .*SplitType None"):
        list(iter_batches(data, "None", "MultiRecord", 39, where="whole.csv"))
    assert list(iter_batches(data, "None", "MultiRecord", 0)) == [Batch(data, 1)]
    assert list(iter_batches(data, "None", "SingleRecord", 40)) == [Batch(data, 1)]


@pytest.mark.parametrize(
    ("split", "strategy", "field"),
    [("Lines", "MultiRecord", "TransformInput.SplitType"), ("Line", "Multi", "BatchStrategy")],
)
def test_unknown_split_or_strategy_names_the_field(split, strategy, field):
    with pytest.raises(TransformError, match=rf"^{field}: '"):
        list(iter_batches(b"a\n", split, strategy, 0))


def test_payload_limit_reads_megabytes_as_mebibytes():
    assert payload_limit(6) == 6 * 1024 * 1024 == 6 * MIB
    assert payload_limit(0) == 0
