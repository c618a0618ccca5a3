"""Transform jobs on real sandboxed serving containers: the model's own runtime behind a Unix socket, fed by the
batch data plane; order, join, filters, sharding over instances, failures."""

from __future__ import annotations

import textwrap

import pytest

from mlops.local.runtime import JobRequestError
from mlops.local.runtime.transform import run_transform_job
from tests.archives import targz

# The PyTorch serving handler contract (code/inference.py): model_fn is required, the defaults parse CSV into
# a float array and write one CSV line per prediction. The model sums each row's features.
INFERENCE = textwrap.dedent(
    """
    import os, socket
    def model_fn(model_dir):
        weight = float(open(os.path.join(model_dir, "weight.txt")).read())
        def model(x):
            if os.environ.get("FAIL_ON_NEGATIVE") and (x < 0).any():
                raise RuntimeError("negative feature")
            return (x.sum(axis=1) * weight).reshape(-1, 1)
        return model
    """
)


def seed(store, rows_per_object=(400, 7)):
    store.put_bytes("s3://b/model/model.tar.gz", targz({"weight.txt": "2", "code/inference.py": INFERENCE}))
    for i, n in enumerate(rows_per_object):
        lines = [f"id{i}-{r},{r},{i}" for r in range(n)]
        store.put_bytes(f"s3://b/in/part-{i}.csv", ("\n".join(lines) + "\n").encode())


def request(**overrides):
    req = {
        "ModelName": "m",
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in"}},
            "ContentType": "text/csv",
            "SplitType": "Line",
        },
        "TransformOutput": {"S3OutputPath": "s3://b/out", "AssembleWith": "Line", "Accept": "text/csv"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 2},
        "BatchStrategy": "MultiRecord",
        "MaxPayloadInMB": 1,
        "MaxConcurrentTransforms": 2,
        "DataProcessing": {"InputFilter": "$[1:]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    }
    req.update(overrides)
    return req


MODEL = {"ModelName": "m", "PrimaryContainer": {"Image": "img", "ModelDataUrl": "s3://b/model/model.tar.gz"}}


def test_ids_are_dropped_before_the_model_and_joined_back_in_order_across_instances(store, tmp_path, mode):
    seed(store)
    lines = []
    res = run_transform_job(
        request(), job_name="t-1", store=store, job_dir=tmp_path / "job", model=MODEL,
        on_log=lambda host, line: lines.append((host, line)),
    )  # fmt: skip
    assert res.status == "Completed", (res.failure_reason, lines[-20:])
    for i, n in enumerate((400, 7)):
        out = store.path(f"s3://b/out/part-{i}.csv.out").read_text().splitlines()
        # the id column never reached the model (the sum would include it) and came back beside the prediction
        assert out == [f"id{i}-{r},{2.0 * (r + i)}" for r in range(n)]
    assert res.properties["TransformJobStatus"] == "Completed"
    assert res.metrics["transform:records"] == 407 and res.metrics["transform:objects"] == 2
    # both instances served (whole objects spread over them), each a sandboxed host of its own
    assert {h for h, line in lines if "serving with the model's code/inference.py handlers" in line} == {
        "algo-1",
        "algo-2",
    }
    assert not (tmp_path / "job" / "algo-1" / "layer").exists()


def test_a_model_error_fails_the_job_naming_the_object_and_uploads_nothing(store, tmp_path, bwrap_mode):
    seed(store)
    store.put_bytes("s3://b/in/part-9.csv", b"bad,-1,0\n")
    req = request(Environment={"FAIL_ON_NEGATIVE": "1"})
    res = run_transform_job(req, job_name="t-2", store=store, job_dir=tmp_path / "job", model=MODEL)
    assert res.status == "Failed"
    assert "part-9.csv" in res.failure_reason and "negative feature" in res.failure_reason, res.failure_reason
    assert store.list("s3://b/out/") == []


def test_a_model_whose_server_cannot_start_fails_with_its_error(store, tmp_path, bwrap_mode):
    seed(store)
    broken = targz({"code/inference.py": "def model_fn(d):\n    raise ImportError('no such lib')\n"})
    store.put_bytes("s3://b/model/model.tar.gz", broken)
    res = run_transform_job(request(), job_name="t-3", store=store, job_dir=tmp_path / "job", model=MODEL)
    assert res.status == "Failed" and "no such lib" in res.failure_reason, res.failure_reason


@pytest.mark.parametrize(
    "model, words",
    [
        ({"PrimaryContainer": {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/mine:1",
                               "ModelDataUrl": "s3://b/plain/model.tar.gz"}}, "no local serving runtime"),
        ({"Containers": [{"Image": "a"}, {"Image": "b"}]}, "inference pipeline of 2 containers"),
        ({"PrimaryContainer": {}}, "names no container image"),
    ],
)  # fmt: skip
def test_what_cannot_be_served_is_refused_before_start(store, tmp_path, bwrap_mode, model, words):
    seed(store)
    store.put_bytes("s3://b/plain/model.tar.gz", targz({"model.bin": "x"}))
    with pytest.raises(JobRequestError, match=words):
        run_transform_job(
            request(),
            job_name="t-4",
            store=store,
            job_dir=tmp_path / "job",
            model={"ModelName": "m", **model},
        )


def test_bad_transform_settings_are_one_line_before_start(store, tmp_path, bwrap_mode):
    seed(store)
    with pytest.raises(JobRequestError, match="SplitType"):
        run_transform_job(
            request(TransformInput={**request()["TransformInput"], "SplitType": "Paragraph"}),
            job_name="t-5", store=store, job_dir=tmp_path / "job", model=MODEL,
        )  # fmt: skip
