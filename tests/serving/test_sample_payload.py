"""``sample.json`` at the repository root: the payload the README's ``mlops endpoints invoke`` sends.

It is checked against the project's own serving code: the training step's ``inference.py`` handlers, loaded
by the model server's ``ModelService`` exactly as an endpoint loads them, on a small real digits model.
"""

from __future__ import annotations

import gc
import json

import pytest

from mlops.serving.server import ModelService
from tests.project import ROOT as PROJECT_ROOT

SAMPLE = PROJECT_ROOT / "sample.json"


def test_sample_json_is_one_row_of_64_pixel_values():
    doc = json.loads(SAMPLE.read_text())
    assert list(doc) == ["instances"]
    (row,) = doc["instances"]
    assert len(row) == 64 and all(isinstance(v, float) and 0 <= v <= 16 for v in row)  # 8x8, 0-16 each


@pytest.mark.slow  # trains the small digits model of tests/serving/conftest.py (a few seconds)
def test_the_model_server_answers_sample_json_with_its_digit(digits_model):
    import torch

    model_dir, _, _ = digits_model
    service = ModelService(model_dir)
    threads = torch.get_num_threads()
    service.load()  # code/inference.py's model_fn, as a serving worker does
    gc.unfreeze()  # load() tunes a worker process for its lifetime (GC frozen, one torch thread): undo here
    torch.set_num_threads(threads)
    status, body, content_type = service.run(SAMPLE.read_bytes(), "application/json", "application/json")
    assert (status, content_type) == (200, "application/json"), body
    (prediction,) = json.loads(body)["predictions"]
    assert prediction["label"] == 0  # sample.json is sklearn's first digits image, a 0
    assert len(prediction["probabilities"]) == 10
