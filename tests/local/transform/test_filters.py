"""DataProcessing on real CSV and JSON records: the documented JSONPath subset, joins and refusals."""

from __future__ import annotations

import json

import pytest

from mlops.local.transform import TransformError
from mlops.local.transform.filters import DataProcessing, JsonPathFilter, media_type

ROW = ["id7", "a", "b", "c", "d", "e", "f"]  # a CSV record is an array of its (string) fields
DOC = {"id": 7, "features": [1, 2], "SageMakerOutput": {"label": 1}, "meta": {"a": 1, "b": 2}}


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("$", ROW, ROW),
        ("", ROW, ROW),  # the API allows an empty filter: the default "$"
        ("$[1:]", ROW, ROW[1:]),  # the documented "drop the ID column"
        ("$[0,5:]", ROW, ["id7", "e", "f"]),  # the documented OutputFilter example: index plus slice
        ("$[0,-1]", ROW, ["id7", "f"]),
        ("$[-1]", ROW, "f"),  # a definite path gives the value, not a list
        ("$[1,3,5]", ROW, ["a", "c", "e"]),
        ("$[2:5]", ROW, ["b", "c", "d"]),  # end-exclusive, as Jayway JsonPath and Array.slice
        ("$[:2]", ROW, ["id7", "a"]),
        ("$[*]", ROW, ROW),
        ("$.features", DOC, [1, 2]),
        ("$.SageMakerOutput", DOC, {"label": 1}),
        ("$['id','SageMakerOutput']", DOC, {"id": 7, "SageMakerOutput": {"label": 1}}),
        ("$.meta.['a','b']", DOC, {"a": 1, "b": 2}),
        ("$.meta.*", DOC, [1, 2]),
        ("$.features[0]", DOC, 1),
        ("$['a,b']", {"a,b": 1}, 1),  # a comma inside quotes is part of the name
    ],
)
def test_documented_paths_select_what_sagemaker_selects(path, value, expected):
    assert JsonPathFilter(path, "DataProcessing.OutputFilter").select(value, "obj") == expected


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("$[", "is not valid JSONPath"),
        ("$[1:]x", "is not valid JSONPath"),
        ("features", "must start with '$'"),
        ("$..id", "outside the JSONPath subset"),  # deep scan is not in SageMaker's list
        ("$[::2]", "slice step"),
        ("$.`this`", "outside the JSONPath subset"),
        ("$." + "a" * 62, "longer than 63 characters"),
    ],
)
def test_bad_jsonpath_names_the_field_and_the_value(path, reason):
    with pytest.raises(TransformError) as info:
        DataProcessing(input_filter=path, content_type="text/csv")
    message = str(info.value)
    assert message.startswith(f"DataProcessing.InputFilter: {path!r} ")
    assert reason in message and "\n" not in message


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        ("$[0,9]", ROW, "selects index 9, outside the record's 7 elements"),
        ("$[-8]", ROW, "selects index -8"),
        ("$[9:]", ROW, "selects nothing from the record"),
        ("$.features", ROW, "selects field 'features' from a list"),
        ("$.missing", DOC, "selects field 'missing', which the record does not have"),
        ("$['id','nope']", DOC, "selects field 'nope'"),
        ("$[1:]", DOC, "slices a JSON object"),
    ],
)
def test_a_path_the_record_cannot_satisfy_fails_that_record(path, value, reason):
    # SageMaker documents an error for indexes outside the joined record, not an empty output.
    with pytest.raises(TransformError) as info:
        JsonPathFilter(path, "DataProcessing.OutputFilter").select(value, "in.csv: record index 3")
    assert str(info.value).startswith(f"in.csv: record index 3: DataProcessing.OutputFilter {path!r} ")
    assert reason in str(info.value)


def test_csv_input_filter_drops_the_id_column_and_keeps_quoting():
    processing = DataProcessing(input_filter="$[1:]", content_type="text/csv")
    assert processing.filter_input(b"id7,1.5,2", "in.csv") == b"1.5,2"
    assert processing.filter_input(b'id8,"a,b",3', "in.csv") == b'"a,b",3'


def test_csv_join_then_output_filter_keeps_id_and_prediction():
    processing = DataProcessing("$[1:]", "$[0,-1]", "Input", content_type="text/csv", accept="text/csv")
    inputs = [b"id1,1,2", b"id2,3,4"]
    assert processing.assemble(inputs, b"0.1\n0.9\n", where="in.csv", first=0) == [b"id1,0.1", b"id2,0.9"]


def test_csv_join_appends_every_output_field_after_the_input():
    processing = DataProcessing(join_source="Input", content_type="text/csv", accept="text/csv")
    assert processing.assemble([b"1,2,3"], b"1,label-a\r\n", where="in.csv", first=0) == [b"1,2,3,1,label-a"]


def test_json_join_adds_sagemaker_output_to_objects_and_wraps_anything_else():
    processing = DataProcessing(join_source="Input", content_type="application/jsonlines")
    inputs = [b'{"key":1}', b"[1,2]", b'{"key":2,"SageMakerOutput":"overwritten"}']
    outputs = b'{"label":1}\n{"label":0}\n{"label":2}\n'
    joined = [json.loads(r) for r in processing.assemble(inputs, outputs, where="in.jsonl", first=0)]
    assert joined == [
        {"key": 1, "SageMakerOutput": {"label": 1}},
        {"SageMakerInput": [1, 2], "SageMakerOutput": {"label": 0}},
        {"key": 2, "SageMakerOutput": {"label": 2}},
    ]


def test_json_input_filter_and_output_filter_by_name():
    processing = DataProcessing(
        "$.features", "$['id','SageMakerOutput']", "Input", content_type="application/jsonlines"
    )
    record = b'{"id":"a-1","features":[0.5,1.5],"note":"dropped"}'
    assert processing.filter_input(record, "in.jsonl") == b"[0.5,1.5]"
    assert processing.assemble([record], b"0.75\n", where="in.jsonl", first=0) == [
        b'{"id":"a-1","SageMakerOutput":0.75}'
    ]


def test_whole_object_json_is_one_record_even_when_the_answer_spans_lines():
    processing = DataProcessing(join_source="Input", content_type="application/json", split_type="None")
    answer = b'{\n  "label": 1\n}\n'
    assert processing.assemble([b'{"x": [1, 2]}'], answer, where="doc.json", first=0) == [
        b'{"x":[1,2],"SageMakerOutput":{"label":1}}'
    ]


@pytest.mark.parametrize("response", [b"0.1\n", b"0.1\n0.2\n0.3\n", b""])
def test_a_model_returning_the_wrong_record_count_names_the_object(response):
    processing = DataProcessing(join_source="Input", content_type="text/csv", accept="text/csv")
    with pytest.raises(TransformError) as info:
        processing.assemble([b"1", b"2"], response, where="data/in.csv", first=40)
    assert str(info.value).startswith("data/in.csv: the model returned ")
    assert "for the 2 records from record index 40" in str(info.value)


def test_csv_records_are_arrays_so_names_do_not_select():
    processing = DataProcessing(
        output_filter="$.SageMakerOutput", join_source="Input", content_type="text/csv", accept="text/csv"
    )
    with pytest.raises(TransformError, match="selects field 'SageMakerOutput' from a list"):
        processing.assemble([b"1,2"], b"0.5\n", where="in.csv", first=0)


def test_a_json_object_cannot_be_written_as_csv():
    processing = DataProcessing(join_source="Input", content_type="application/jsonlines", accept="text/csv")
    with pytest.raises(
        TransformError, match="JSON object, which TransformOutput.Accept text/csv cannot hold"
    ):
        processing.assemble([b'{"a":1}'], b"0.5\n", where="in.jsonl", first=0)
    processing = DataProcessing(
        output_filter="$.SageMakerOutput",
        join_source="Input",
        content_type="application/jsonlines",
        accept="text/csv",
    )
    assert processing.assemble([b'{"a":1}'], b"0.5,0.7\n", where="in.jsonl", first=0) == [b"0.5,0.7"]


def test_records_that_do_not_parse_name_the_record():
    processing = DataProcessing(input_filter="$.x", content_type="application/jsonlines")
    with pytest.raises(TransformError, match=r"^in\.jsonl: record index 4: not valid JSON"):
        processing.filter_input(b"{not json", "in.jsonl: record index 4")
    with pytest.raises(TransformError, match="not UTF-8 text"):
        processing.filter_input(b'{"x": "\xff"}', "in.jsonl: record index 5")


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        (
            {"split_type": "RecordIO", "content_type": "application/x-recordio-protobuf"},
            "TransformInput.ContentType",
        ),
        ({"split_type": "RecordIO", "content_type": "text/csv"}, "TransformInput.SplitType"),
        ({"split_type": "TFRecord", "content_type": "application/json"}, "TransformInput.SplitType"),
        ({"split_type": "None", "content_type": "text/csv"}, "TransformInput.SplitType"),
        ({"split_type": "None", "content_type": "application/jsonlines"}, "TransformInput.SplitType"),
        ({"content_type": None}, "TransformInput.ContentType"),
        ({"content_type": "text/csv", "accept": "application/x-protobuf"}, "TransformOutput.Accept"),
        ({"content_type": "text/csv", "assemble_with": "None"}, "TransformOutput.AssembleWith"),
    ],
)
def test_settings_sagemaker_refuses_for_data_processing_name_the_field(settings, field):
    with pytest.raises(TransformError, match=rf"^{field}: .*DataProcessing\.JoinSource 'Input'"):
        DataProcessing(join_source="Input", **settings)


def test_unknown_join_source_names_the_field():
    with pytest.raises(
        TransformError, match=r"^DataProcessing.JoinSource: 'Output' is not one of None, Input$"
    ):
        DataProcessing(join_source="Output")


def test_default_data_processing_is_inactive_for_any_content():
    processing = DataProcessing(content_type="application/x-recordio-protobuf", split_type="RecordIO")
    assert not processing.active
    assert processing.filter_input(b"\x00\xffbinary", "in.rec") == b"\x00\xffbinary"


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [("text/csv", "text/csv"), ("Text/CSV; charset=utf-8", "text/csv"), (None, None), ("", None)],
)
def test_media_type_ignores_parameters_and_case(content_type, expected):
    assert media_type(content_type) == expected
