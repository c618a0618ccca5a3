"""The real digits model (training step's model.py + inference.py) served by a local endpoint."""

from __future__ import annotations

import json

import pytest

from mlops.serving import supervisor

pytestmark = pytest.mark.slow  # trains a small model first


@pytest.fixture(scope="module")
def home(tmp_path_factory, digits_model):
    """One endpoint serving the digits model for the whole module."""
    path = tmp_path_factory.mktemp("mlops")
    supervisor.start_endpoint("digits", digits_model[0], supervisor.free_port(), home=path, workers=1)
    yield path
    supervisor.stop_endpoint("digits", home=path)


def test_a_trained_digits_model_predicts_known_digits(home, digits_model):
    _, x_test, y_test = digits_model

    result = supervisor.invoke("digits", json.dumps({"instances": x_test.tolist()}).encode(), home=home)
    assert result.status == 200
    labels = [p["label"] for p in json.loads(result.body)["predictions"]]
    assert len(labels) == len(y_test)
    assert sum(int(a == b) for a, b in zip(labels, y_test, strict=True)) / len(labels) >= 0.9

    csv_rows = "\n".join(",".join(str(int(v)) for v in row) for row in x_test[:5]).encode()
    by_csv = supervisor.invoke("digits", csv_rows, "text/csv", home=home)
    assert [p["label"] for p in json.loads(by_csv.body)["predictions"]] == labels[:5]

    one_row = supervisor.invoke("digits", json.dumps(x_test[0].tolist()).encode(), home=home)
    assert json.loads(one_row.body)["predictions"][0]["label"] == labels[0]


@pytest.mark.parametrize(
    "body, content_type, accept, status, message",
    [
        (b"[[1, 2, 3]]", "application/json", None, 400, "64 values"),
        (b'{"rows": []}', "application/json", None, 400, "'instances'"),
        (b"1,2,x\n", "text/csv", None, 400, "not a number"),
        (b"[" + b"0," * 63 + b"0]", "application/json", "text/csv", 406, "cannot produce Accept 'text/csv'"),
    ],
    ids=["short-row", "no-instances", "csv-word", "csv-accept"],
)
def test_bad_digits_requests_get_the_handlers_message(home, body, content_type, accept, status, message):
    result = supervisor.invoke("digits", body, content_type, accept=accept, home=home)
    assert result.status == status
    assert message in json.loads(result.body)["error"]
    assert supervisor.invoke("digits", b"[" + b"0," * 63 + b"0]", home=home).status == 200
