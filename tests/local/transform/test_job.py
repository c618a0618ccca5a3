"""Whole transform jobs over real files, with real scoring functions and a real loopback HTTP model."""

from __future__ import annotations

import gzip
import json
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mlops.local.transform import TransformError
from mlops.local.transform.job import TransformFailed, TransformSpec, TransformSummary, run_transform, shard
from tests.local.transform.test_records import recordio_part, tfrecord_frame


def sum_model(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
    """One prediction line per CSV record: the sum of its fields. A non-numeric field (an ID the
    InputFilter should have dropped) or a FAIL marker is a model error, as a real server's 4xx/5xx."""
    assert content_type == "text/csv"
    lines = []
    for line in payload.decode().split("\n"):
        fields = line.split(",")
        if "FAIL" in fields:
            raise RuntimeError("model exploded on a FAIL record")
        lines.append(f"{sum(float(field) for field in fields):g}")
    return ("\n".join(lines) + "\n").encode()


def features_model(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
    """JSON lines of feature arrays in, one ``{"score": ...}`` line out per record."""
    return b"".join(
        json.dumps({"score": sum(json.loads(line))}).encode() + b"\n" for line in payload.split(b"\n")
    )


def csv_spec(**overrides: object) -> TransformSpec:
    request = {
        "TransformInput": {"ContentType": "text/csv", "SplitType": "Line"},
        "TransformOutput": {"Accept": "text/csv", "AssembleWith": "Line"},
    }
    request.update(overrides)
    return TransformSpec.from_request(request)


def write(path: Path, data: bytes) -> tuple[str, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.name, path


class ModelServer:
    """A loopback-only model server for the tests: POST /invocations scores with ``sum_model``."""

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server dispatches to
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.payloads.append(body)
                try:
                    status, answer = (
                        200,
                        sum_model(body, self.headers["Content-Type"], self.headers["Accept"]),
                    )
                except (RuntimeError, ValueError) as exc:
                    status, answer = 500, f'{{"message": "{exc}"}}'.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/csv" if status == 200 else "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:  # keeps test output quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/invocations"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        # A proxy from the environment must not see loopback requests.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def invoke(self, payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        headers = {"Content-Type": content_type or "application/octet-stream", "Accept": accept or "*/*"}
        request = urllib.request.Request(self.url, data=payload, headers=headers, method="POST")
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"HTTP {exc.code}: {json.loads(exc.read())['message']}") from exc


@pytest.fixture
def model_server() -> Iterator[ModelServer]:
    server = ModelServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        server.thread.join(timeout=5)


def test_many_concurrent_batches_come_back_in_input_order(tmp_path):
    # ~10 MiB of 2,000 lines against a 1 MiB payload limit: about ten batches, four in flight.
    pad = "p" * 5000
    lines = [f"{i},{i * 3},{pad}" for i in range(2000)]
    objects = [write(tmp_path / "in" / "big.csv", ("\n".join(lines) + "\n").encode())]
    lock, calls, state = threading.Lock(), [], {"in_flight": 0, "max_in_flight": 0}

    def slow_early_model(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        with lock:
            calls.append(payload[: payload.index(b",")])
            arrival = len(calls)
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
        time.sleep(max(0.0, 0.3 - 0.05 * arrival))  # earlier requests answer later
        with lock:
            state["in_flight"] -= 1
        return b"".join(line.split(b",", 2)[1] + b"\n" for line in payload.split(b"\n"))

    spec = csv_spec(MaxConcurrentTransforms=4, MaxPayloadInMB=1, BatchStrategy="MultiRecord")
    summary = run_transform(spec, objects, lambda key: tmp_path / "out", slow_early_model)

    assert (tmp_path / "out" / "big.csv.out").read_text().splitlines() == [str(i * 3) for i in range(2000)]
    assert summary.objects == 1 and summary.records == 2000
    assert summary.batches == len(calls) >= 9
    assert 2 <= state["max_in_flight"] <= 4


def test_documented_csv_example_through_a_real_http_model(tmp_path, model_server):
    # InputFilter "$[1:]" drops the ID before the model, JoinSource Input puts the input back,
    # OutputFilter "$[0,-1]" keeps the ID and the prediction.
    data = b"id-1,1,2\r\nid-2,3,4.5\r\nid-3,0,0\r\n"
    objects = [write(tmp_path / "in" / "scores.csv", data)]
    spec = csv_spec(
        BatchStrategy="SingleRecord",
        MaxConcurrentTransforms=2,
        DataProcessing={"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )
    summary = run_transform(spec, objects, lambda key: tmp_path / "out", model_server.invoke)

    expected = b"id-1,3\nid-2,7.5\nid-3,0\n"
    assert (tmp_path / "out" / "scores.csv.out").read_bytes() == expected
    assert sorted(model_server.payloads) == [b"0,0", b"1,2", b"3,4.5"]  # no request carried an ID
    assert summary == TransformSummary(
        objects=1, records=3, batches=3, bytes_in=len(data), bytes_out=len(expected)
    )


def test_csv_join_without_filters_appends_the_prediction(tmp_path):
    objects = [write(tmp_path / "in.csv", b"1,2\n3,4\n")]
    spec = csv_spec(DataProcessing={"JoinSource": "Input"})
    run_transform(spec, objects, lambda key: tmp_path / "out", sum_model)
    assert (tmp_path / "out" / "in.csv.out").read_text() == "1,2,3\n3,4,7\n"


def test_json_lines_join_with_input_and_output_filters(tmp_path):
    records = [{"id": f"r{i}", "features": [i, i + 0.5], "note": "x" * i} for i in range(50)]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    objects = [write(tmp_path / "in" / "rows.jsonl", data)]
    spec = TransformSpec.from_request(
        {
            "MaxConcurrentTransforms": 3,
            "TransformInput": {"ContentType": "application/jsonlines", "SplitType": "Line"},
            "TransformOutput": {"Accept": "application/jsonlines", "AssembleWith": "Line"},
            "DataProcessing": {
                "InputFilter": "$.features",
                "JoinSource": "Input",
                "OutputFilter": "$['id','SageMakerOutput']",
            },
        }
    )
    run_transform(spec, objects, lambda key: tmp_path / "out", features_model)
    out = [json.loads(line) for line in (tmp_path / "out" / "rows.jsonl.out").read_text().splitlines()]
    assert out == [{"id": f"r{i}", "SageMakerOutput": {"score": 2 * i + 0.5}} for i in range(50)]


@pytest.mark.parametrize(
    ("assemble", "expected"),
    [("Line", b"3\n7\n11\n"), ("None", b"3\n7\n11\n")],  # the model ends its answer with a newline
)
def test_assemble_with_writes_model_answers(tmp_path, assemble, expected):
    objects = [write(tmp_path / "in.csv", b"1,2\n3,4\n5,6\n")]
    spec = csv_spec(TransformOutput={"AssembleWith": assemble}, MaxPayloadInMB=0)
    run_transform(spec, objects, lambda key: tmp_path / "out", sum_model)
    assert (tmp_path / "out" / "in.csv.out").read_bytes() == expected


@pytest.mark.parametrize(("assemble", "expected"), [("Line", b"3\n7\n11\n"), ("None", b"3711")])
def test_assemble_with_line_ends_every_record_none_concatenates(tmp_path, assemble, expected):
    def bare_model(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        return sum_model(payload, content_type, accept).rstrip(b"\n")  # no trailing newline

    objects = [write(tmp_path / "in.csv", b"1,2\n3,4\n5,6\n")]
    spec = csv_spec(TransformOutput={"AssembleWith": assemble}, BatchStrategy="SingleRecord")
    run_transform(spec, objects, lambda key: tmp_path / "out", bare_model)
    assert (tmp_path / "out" / "in.csv.out").read_bytes() == expected


def test_gzip_input_is_decompressed_before_splitting(tmp_path):
    plain = b"".join(b"%d,%d\n" % (i, i) for i in range(300))
    objects = [write(tmp_path / "in" / "part.csv.gz", gzip.compress(plain))]
    spec = csv_spec(
        TransformInput={"ContentType": "text/csv", "SplitType": "Line", "CompressionType": "Gzip"}
    )
    summary = run_transform(spec, objects, lambda key: tmp_path / "out", sum_model)
    assert (tmp_path / "out" / "part.csv.gz.out").read_text().splitlines() == [str(2 * i) for i in range(300)]
    assert summary.bytes_in == len(plain) and summary.records == 300


def test_gzip_declared_but_not_gzip_fails_that_object(tmp_path):
    objects = [write(tmp_path / "plain.csv", b"1,2\n")]
    spec = csv_spec(
        TransformInput={"ContentType": "text/csv", "SplitType": "Line", "CompressionType": "Gzip"}
    )
    with pytest.raises(TransformFailed, match=r"^plain\.csv: TransformInput\.CompressionType is Gzip but"):
        run_transform(spec, objects, lambda key: tmp_path / "out", sum_model)
    assert not (tmp_path / "out" / "plain.csv.out").exists()


def test_failing_model_leaves_no_out_names_key_batch_and_message_and_other_objects_finish(
    tmp_path, model_server
):
    good = write(tmp_path / "in" / "a-good.csv", b"1,1\n2,2\n")
    lines = [b"%d,%d" % (i, i) for i in range(30)]
    lines[17] = b"FAIL,1"
    bad = ("nested/b-bad.csv", write(tmp_path / "in" / "nested" / "b-bad.csv", b"\n".join(lines))[1])
    out = tmp_path / "out"
    (out / "nested").mkdir(parents=True)
    (out / "nested" / "b-bad.csv.out").write_text("stale result of an earlier run\n")
    spec = csv_spec(BatchStrategy="SingleRecord", MaxConcurrentTransforms=3)

    with pytest.raises(TransformFailed) as info:
        run_transform(spec, [bad, good], lambda key: out, model_server.invoke)

    assert str(info.value) == (
        "nested/b-bad.csv: the model failed on the 1-record batch from record index 17: "
        "HTTP 500: model exploded on a FAIL record"
    )
    assert [f.relative_to(out).as_posix() for f in sorted(out.rglob("*")) if f.is_file()] == [
        "a-good.csv.out"
    ]
    assert (out / "a-good.csv.out").read_text() == "2\n4\n"  # SageMaker carries on with other objects
    assert info.value.summary.objects == 1 and len(info.value.failures) == 1


def test_wrong_record_count_from_the_model_fails_the_object(tmp_path):
    def drops_last(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        return b"\n".join(sum_model(payload, content_type, accept).splitlines()[:-1]) + b"\n"

    objects = [write(tmp_path / "rows.csv", b"1,2\n3,4\n5,6\n")]
    spec = csv_spec(DataProcessing={"JoinSource": "Input"})
    with pytest.raises(TransformFailed) as info:
        run_transform(spec, objects, lambda key: tmp_path / "out", drops_last)
    assert str(info.value).startswith(
        "rows.csv: the model returned 2 records for the 3 records from record index 0"
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_a_record_over_the_payload_limit_fails_before_any_output(tmp_path):
    big = b"1," + b"0" * (1024 * 1024) + b"\n"
    objects = [write(tmp_path / "wide.csv", b"1,2\n" + big)]
    with pytest.raises(TransformFailed) as info:
        run_transform(csv_spec(MaxPayloadInMB=1), objects, lambda key: tmp_path / "out", sum_model)
    assert str(info.value) == (
        f"wide.csv: record index 1 is {len(big) - 1} bytes, over the MaxPayloadInMB limit of 1048576 bytes"
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_several_failures_report_the_first_and_count_the_rest(tmp_path):
    objects = [write(tmp_path / f"{name}.csv", b"FAIL\n") for name in ("x", "y", "z")]
    with pytest.raises(TransformFailed, match=r"^x\.csv: .* \(and 2 more of 3 input objects failed\)$"):
        run_transform(csv_spec(), objects, lambda key: tmp_path / "out", sum_model)


def test_recordio_job_sends_framed_records_and_assembles_one_line_each(tmp_path):
    frames = [recordio_part(b"rec-%d" % i * (i + 1)) for i in range(40)]
    objects = [write(tmp_path / "train.rec", b"".join(frames))]

    def frame_model(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        answers, offset = [], 0
        while offset < len(payload):  # the payload must still be RecordIO to be split here
            _, lrecord = struct.unpack_from("<II", payload, offset)
            answers.append(b"%d" % lrecord)
            offset += 8 + lrecord + (-lrecord % 4)
        return b"\n".join(answers)

    spec = TransformSpec(
        content_type="application/x-recordio", split_type="RecordIO", assemble_with="Line", max_payload_mb=1
    )
    run_transform(spec, objects, lambda key: tmp_path / "out", frame_model)
    expected = [str(len(b"rec-%d" % i * (i + 1))) for i in range(40)]
    assert (tmp_path / "out" / "train.rec.out").read_text().splitlines() == expected


def test_tfrecord_single_record_requests_are_whole_frames(tmp_path):
    frames = [tfrecord_frame(b"example-%d" % i) for i in range(5)]
    objects = [write(tmp_path / "data.tfrecord", b"".join(frames))]
    seen: list[bytes] = []

    def recording_model(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
        seen.append(payload)
        return b"ok"

    spec = TransformSpec(split_type="TFRecord", batch_strategy="SingleRecord", assemble_with="Line")
    summary = run_transform(spec, objects, lambda key: tmp_path / "out", recording_model)
    assert seen == frames and summary.batches == 5
    assert (tmp_path / "out" / "data.tfrecord.out").read_bytes() == b"ok\n" * 5


@pytest.mark.parametrize(("count", "instances"), [(10, 3), (7, 1), (2, 5), (0, 2), (12, 4)])
def test_shard_covers_every_object_exactly_once(count, instances):
    objects = [(f"part-{i:03d}.csv", Path(f"/in/part-{i:03d}.csv")) for i in reversed(range(count))]
    shards = shard(objects, instances)
    assert len(shards) == instances
    assigned = [item for part in shards for item in part]
    assert sorted(assigned) == sorted(objects) and len(assigned) == len(set(assigned))
    sizes = [len(part) for part in shards]
    assert max(sizes) - min(sizes) <= 1


def test_each_instance_gets_its_own_invoke_and_only_its_shard(tmp_path):
    objects = [write(tmp_path / "in" / f"f{i}.csv", b"%d,1\n" % i) for i in range(7)]
    served: dict[int, list[bytes]] = {}
    lock = threading.Lock()

    def invoke_for(instance: int):
        def invoke(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
            with lock:
                served.setdefault(instance, []).append(payload)
            return sum_model(payload, content_type, accept)

        return invoke

    progress: list[tuple[int, int, int]] = []
    spec = csv_spec(TransformResources={"InstanceCount": 3, "InstanceType": "ml.m5.large"})
    summary = run_transform(
        spec,
        objects,
        lambda key: tmp_path / "out",
        on_progress=lambda *a: progress.append(a),
        invoke_for=invoke_for,
    )
    expected = {
        i: sorted(b"%d,1" % int(key[1]) for key, _ in part) for i, part in enumerate(shard(objects, 3))
    }
    assert {i: sorted(payloads) for i, payloads in served.items()} == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"f{i}.csv.out" for i in range(7)]
    assert summary.objects == 7
    assert progress[0] == (0, 7, 0) and progress[-1] == (7, 7, 7)
    assert [p[0] for p in progress] == list(range(8))


def test_output_keeps_the_key_path(tmp_path):
    objects = [("2024/01/day.csv", write(tmp_path / "in" / "day.csv", b"1,2\n")[1])]
    run_transform(csv_spec(), objects, lambda key: tmp_path / "out", sum_model)
    assert (tmp_path / "out" / "2024" / "01" / "day.csv.out").read_text() == "3\n"


@pytest.mark.parametrize("key", ["../escape.csv", "/abs.csv", "dir/", ""])
def test_keys_that_would_leave_the_output_path_are_refused(tmp_path, key):
    with pytest.raises(TransformError, match="cannot name an output object"):
        run_transform(csv_spec(), [(key, tmp_path / "x")], lambda k: tmp_path / "out", sum_model)


def test_bad_jsonpath_in_a_request_names_the_field_and_value():
    with pytest.raises(TransformError) as info:
        csv_spec(DataProcessing={"InputFilter": "$[1:", "JoinSource": "Input"})
    assert str(info.value).startswith("DataProcessing.InputFilter: '$[1:' is not valid JSONPath")


def test_request_defaults():
    spec = TransformSpec.from_request({"TransformInput": {"DataSource": {}}, "MaxConcurrentTransforms": 0})
    assert (spec.split_type, spec.batch_strategy, spec.max_payload_mb, spec.max_concurrent) == (
        "None",
        "MultiRecord",
        6,
        1,
    )
    assert (spec.assemble_with, spec.join_source, spec.instance_count, spec.compression) == (
        "None",
        "None",
        1,
        "None",
    )
    assert spec.max_payload_bytes == 6 * 1024 * 1024


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"MaxPayloadInMB": 101}, "MaxPayloadInMB: 101 is not between 0 and 100"),
        ({"MaxPayloadInMB": "6"}, "MaxPayloadInMB: expected an integer, got '6'"),
        (
            {"MaxConcurrentTransforms": 11, "MaxPayloadInMB": 10},
            "MaxConcurrentTransforms * MaxPayloadInMB: 11 * 10",
        ),
        ({"BatchStrategy": "Batched"}, "BatchStrategy: 'Batched' is not one of MultiRecord, SingleRecord"),
        ({"TransformInput": {"SplitType": "Lines"}}, "TransformInput.SplitType: 'Lines' is not one of"),
        (
            {"TransformInput": {"CompressionType": "Zip"}},
            "TransformInput.CompressionType: 'Zip' is not one of",
        ),
        (
            {"TransformOutput": {"AssembleWith": "Newline"}},
            "TransformOutput.AssembleWith: 'Newline' is not one of",
        ),
        (
            {"TransformResources": {"InstanceCount": 0}},
            "TransformResources.InstanceCount: 0 is not at least 1",
        ),
        ({"TransformInput": "s3://bucket"}, "TransformInput: expected an object, got str"),
    ],
)
def test_invalid_requests_name_the_field(request_, message):
    with pytest.raises(TransformError) as info:
        TransformSpec.from_request(request_)
    assert str(info.value).startswith(message)


def test_invoke_or_invoke_for_not_both(tmp_path):
    with pytest.raises(TypeError):
        run_transform(csv_spec(), [], lambda key: tmp_path, sum_model, invoke_for=lambda i: sum_model)
