"""A job runs on the environment standing in for its image: the image's Python and libraries, not the
project's, and a failure that may come from that says which environment stood in and how to map another."""

from __future__ import annotations

import json
import textwrap

import pytest

from mlops.local.runtime import run_processing_job

SKLEARN = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"

# Written for the scikit-learn 1.2-1 image's pandas 1.1.3: error_bad_lines is gone from pandas 2.
SCRIPT = textwrap.dedent(
    """
    import io, json, sys
    import pandas as pd, sklearn
    frame = pd.read_csv(io.StringIO("a,b\\n1,2\\n3,4,5\\n"), error_bad_lines=False)
    with open("/opt/ml/processing/output/versions.json", "w") as f:
        json.dump({"python": "%d.%d" % sys.version_info[:2], "pandas": pd.__version__,
                   "sklearn": sklearn.__version__, "rows": len(frame)}, f)
    """
)


def request(store, image: str, script: str) -> dict:
    store.put_bytes("s3://b/code/job.py", script.encode())
    return {
        "AppSpecification": {
            "ImageUri": image,
            "ContainerEntrypoint": ["python3", "/opt/ml/processing/input/code/job.py"],
        },
        "ProcessingInputs": [
            {
                "InputName": "code",
                "S3Input": {"S3Uri": "s3://b/code/job.py", "LocalPath": "/opt/ml/processing/input/code",
                            "S3DataType": "S3Prefix", "S3InputMode": "File"},
            }
        ],
        "ProcessingOutputConfig": {
            "Outputs": [{"OutputName": "out", "S3Output": {"S3Uri": "s3://b/out", "LocalPath": "/opt/ml/processing/output",
                                                           "S3UploadMode": "EndOfJob"}}]
        },
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 5}},
        "RoleArn": "arn:aws:iam::111122223333:role/r",
    }  # fmt: skip


@pytest.mark.slow
def test_a_scikit_learn_image_job_runs_on_the_images_libraries(store, tmp_path, bwrap_mode):
    lines = []
    res = run_processing_job(
        request(store, SKLEARN, SCRIPT), job_name="sk-1", store=store, job_dir=tmp_path / "j",
        on_log=lambda host, line: lines.append(line),
    )  # fmt: skip
    assert res.status == "Completed", res.failure_reason
    got = json.loads(store.path("s3://b/out/versions.json").read_text())
    assert got == {"python": "3.9", "pandas": "1.1.3", "sklearn": "1.2.1", "rows": 1}


@pytest.mark.slow
def test_mapped_to_the_project_the_same_job_fails_and_says_what_stood_in(store, tmp_path, bwrap_mode):
    res = run_processing_job(
        request(store, SKLEARN, SCRIPT), job_name="sk-2", store=store, job_dir=tmp_path / "j",
        images={"sagemaker-scikit-learn:*": "project"},
    )  # fmt: skip
    assert res.status == "Failed"
    assert "TypeError" in res.failure_reason and "error_bad_lines" in res.failure_reason
    assert "the project's environment" in res.failure_reason and "local.images" in res.failure_reason
    assert "sagemaker-scikit-learn:1.2-1-cpu-py3" in res.failure_reason
