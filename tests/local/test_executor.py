"""The executor on hand-written definitions, running real jobs (B1's runtime, tiny ``python3 -c`` scripts)."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from mlops.errors import DefinitionError, MlopsError, ParameterError
from mlops.local.caching import parse_duration
from mlops.local.records import ExecutionRecord, RuntimeFault
from mlops.local.retries import classify_failure
from mlops.local.s3store import S3Store
from mlops.local.scheduler import plan, run_definition
from mlops.local.state.home import Home
from tests.project import ROOT as PROJECT_ROOT

ROLE = "arn:aws:iam::123456789012:role/PipelineRole"


def out_uri(step: str, name: str) -> dict:
    """Outputs land under the execution id, as SDK-compiled definitions do."""
    return {
        "Std:Join": {
            "On": "/",
            "Values": ["s3://bucket", {"Get": "Execution.PipelineExecutionId"}, step, name],
        }
    }


def processing(name: str, code: str, *, inputs=(), outputs=(), env=None, **extra) -> dict:
    """A Processing step whose container runs ``python3 -c code``."""
    return {
        "Name": name,
        "Type": "Processing",
        **extra,
        "Arguments": {
            "ProcessingResources": {
                "ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 1}
            },
            "AppSpecification": {"ImageUri": "python", "ContainerEntrypoint": ["python3", "-c", code]},
            "RoleArn": ROLE,
            "Environment": env or {},
            "ProcessingInputs": [
                {
                    "InputName": n,
                    "S3Input": {
                        "S3Uri": uri,
                        "LocalPath": f"/opt/ml/processing/input/{n}",
                        "S3DataType": "S3Prefix",
                        "S3InputMode": "File",
                    },
                }
                for n, uri in inputs
            ],
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": n,
                        "S3Output": {
                            "S3Uri": out_uri(name, n),
                            "LocalPath": f"/opt/ml/processing/{n}",
                            "S3UploadMode": "EndOfJob",
                        },
                    }
                    for n in outputs
                ]
            },
        },
    }


def definition(*steps, parameters=()) -> dict:
    return {"Version": "2020-12-01", "Metadata": {}, "Parameters": list(parameters), "Steps": list(steps)}


WRITE_REPORT = (
    "import json, os; os.makedirs('/opt/ml/processing/report', exist_ok=True);"
    "json.dump({'metrics': {'accuracy': {'value': float(os.environ['ACC'])}}},"
    " open('/opt/ml/processing/report/evaluation.json', 'w')); print('evaluated')"
)
ACCURACY = {
    "Std:JsonGet": {
        "PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Report"},
        "Path": "metrics.accuracy.value",
    }
}


def gated(acc: str) -> dict:
    """Evaluate -> Check(accuracy >= Threshold) -> Register | Fail."""
    evaluate = processing(
        "Evaluate",
        WRITE_REPORT,
        outputs=["report"],
        env={"ACC": acc},
        PropertyFiles=[{"PropertyFileName": "Report", "OutputName": "report", "FilePath": "evaluation.json"}],
    )
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": "digits",
            "ModelApprovalStatus": {"Get": "Parameters.Approval"},
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/infer:1",
                        "ModelDataUrl": "s3://bucket/model.tar.gz",
                    }
                ],
                "SupportedContentTypes": ["text/csv"],
                "SupportedResponseMIMETypes": ["application/json"],
                "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"],
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {
                        "ContentType": "application/json",
                        "S3Uri": {
                            "Std:Join": {
                                "On": "/",
                                "Values": [
                                    {
                                        "Get": "Steps.Evaluate.ProcessingOutputConfig.Outputs['report'].S3Output.S3Uri"
                                    },
                                    "evaluation.json",
                                ],
                            }
                        },
                    }
                }
            },
        },
    }
    fail = {
        "Name": "TooLow",
        "Type": "Fail",
        "Arguments": {
            "ErrorMessage": {
                "Std:Join": {"On": " ", "Values": ["accuracy below", {"Get": "Parameters.Threshold"}]}
            }
        },
    }
    check = {
        "Name": "Check",
        "Type": "Condition",
        "Arguments": {
            "Conditions": [
                {
                    "Type": "GreaterThanOrEqualTo",
                    "LeftValue": ACCURACY,
                    "RightValue": {"Get": "Parameters.Threshold"},
                }
            ],
            "IfSteps": [register],
            "ElseSteps": [fail],
        },
    }
    params = [
        {"Name": "Threshold", "Type": "Float", "DefaultValue": 0.9},
        {"Name": "Approval", "Type": "String", "DefaultValue": "PendingManualApproval"},
    ]
    return definition(evaluate, check, parameters=params)


def statuses(record: ExecutionRecord) -> dict[str, str]:
    return {name: step.status for name, step in record.steps.items()}


# ------------------------------------------------------------------------------------------- branches


def test_condition_true_registers_model_with_metrics(tmp_path):
    record = run_definition(gated("0.95"), home=tmp_path)
    assert record.status == "Succeeded", record.failure_reason
    assert statuses(record) == {
        "Evaluate": "Succeeded",
        "Check": "Succeeded",
        "Register": "Succeeded",
        "TooLow": "NotExecuted",
    }
    (package,) = Home.open(tmp_path).registry.list(group="digits")
    assert package["approval_status"] == "PendingManualApproval"
    assert package["execution_id"] == record.id
    assert package["metrics"]["ModelQuality.Statistics"]["Content"] == {
        "metrics": {"accuracy": {"value": 0.95}}
    }
    assert package["content_types"] == ["text/csv"]
    arn = record.steps["Register"].properties["ModelPackageArn"]
    assert arn == "arn:aws:sagemaker:eu-west-1:123456789012:model-package/digits/1"
    assert (
        record.steps["Evaluate"].log_paths
        and "evaluated" in Path(record.steps["Evaluate"].log_paths[0]).read_text()
    )


def test_condition_false_takes_fail_branch_and_registers_nothing(tmp_path):
    record = run_definition(gated("0.95"), home=tmp_path, params={"Threshold": "0.99"})
    assert record.status == "Failed"
    assert record.failure_reason == "accuracy below 0.99"
    assert statuses(record)["Register"] == "NotExecuted"
    assert statuses(record)["TooLow"] == "Failed"
    assert Home.open(tmp_path).registry.list() == []


def test_model_step_records_the_model_and_exposes_its_name(tmp_path):
    create = {
        "Name": "MakeModel",
        "Type": "Model",
        "Arguments": {
            "ExecutionRoleArn": ROLE,
            "PrimaryContainer": {"Image": "img", "ModelDataUrl": "s3://bucket/model.tar.gz"},
        },
    }
    use = processing(
        "UseModel",
        "import os; print('model', os.environ['MODEL'])",
        env={"MODEL": {"Get": "Steps.MakeModel.ModelName"}},
    )
    record = run_definition(definition(create, use), home=tmp_path)
    assert record.status == "Succeeded", record.failure_reason
    (model,) = Home.open(tmp_path).registry.models()
    assert model["name"] == record.steps["MakeModel"].properties["ModelName"]
    assert model["arn"].startswith("arn:aws:sagemaker:") and ":123456789012:model/" in model["arn"]
    assert model["request"]["PrimaryContainer"]["ModelDataUrl"] == "s3://bucket/model.tar.gz"
    log = Path(record.steps["UseModel"].log_paths[0]).read_text()
    assert f"model {model['name']}" in log


def test_register_with_missing_metrics_file_fails_with_its_uri(tmp_path):
    register = {
        "Name": "Register",
        "Type": "RegisterModel",
        "Arguments": {
            "ModelPackageGroupName": "digits",
            "InferenceSpecification": {
                "Containers": [{"Image": "img", "ModelDataUrl": "s3://bucket/m.tar.gz"}]
            },
            "ModelMetrics": {
                "ModelQuality": {
                    "Statistics": {"ContentType": "application/json", "S3Uri": "s3://bucket/none.json"}
                }
            },
        },
    }
    record = run_definition(definition(register), home=tmp_path)
    assert record.status == "Failed"
    assert "s3://bucket/none.json not found in the local store" in record.failure_reason
    assert Home.open(tmp_path).registry.list() == []


# ------------------------------------------------------------------------------ refused before running


@pytest.mark.parametrize(
    "params, message",
    [
        ({"Threshold": "high"}, "parameter Threshold is Float"),
        ({"Thresh": "0.5"}, "unknown parameter Thresh"),
    ],
)
def test_bad_parameters_refused_before_anything_runs(tmp_path, params, message):
    with pytest.raises(ParameterError, match=message):
        run_definition(gated("0.95"), home=tmp_path, params=params)
    assert Home.open(tmp_path).runs.list() == []
    assert list((tmp_path / "executions").iterdir()) == []


BAD_DEFINITIONS = [
    (definition({"Name": "E", "Type": "EMR", "Arguments": {}}), "step E: type EMR is not supported"),
    (
        definition({"Name": "Q", "Type": "QualityCheck", "Arguments": {}}),
        "step Q: CheckType is missing (DATA_QUALITY or MODEL_QUALITY)",
    ),
    (
        definition(
            {"Name": "L", "Type": "Lambda", "FunctionArn": "arn:aws:lambda:us-east-1:111122223333:function:f"}
        ),
        "step L: no local handler for Lambda function arn:aws:lambda:us-east-1:111122223333:function:f",
    ),
    (
        definition(processing("A", "pass", inputs=[("x", {"Get": "Steps.Ghost.ProcessingOutputConfig"})])),
        "step 'A': reference 'Steps.Ghost.ProcessingOutputConfig' names unknown step 'Ghost'",
    ),
    (
        definition(processing("A", "pass", DependsOn=["Nope"])),
        "step 'A': DependsOn names unknown step 'Nope'",
    ),
    (
        definition(processing("A", "pass", DependsOn=["B"]), processing("B", "pass", DependsOn=["A"])),
        "the steps form a cycle: A -> B -> A",
    ),
    (
        definition(processing("A", "pass"), processing("A", "print(1)")),
        "step 'A': two different steps have this name",
    ),
    ({"Steps": "nope"}, "not a pipeline definition"),
]


@pytest.mark.parametrize("bad, message", BAD_DEFINITIONS)
def test_invalid_definitions_refused_before_start(tmp_path, bad, message):
    with pytest.raises(DefinitionError) as err:
        run_definition(bad, home=tmp_path)
    assert message in str(err.value)
    assert Home.open(tmp_path).runs.list() == []


def test_plan_orders_by_dependencies():
    steps = plan(
        definition(
            processing(
                "C",
                "pass",
                inputs=[("b", {"Get": "Steps.B.ProcessingOutputConfig.Outputs['o'].S3Output.S3Uri"})],
            ),
            processing("B", "pass", DependsOn=["A"]),
            processing("A", "pass"),
        )
    )
    assert steps.order == ["A", "B", "C"]
    assert steps.steps["C"].deps == {"B"}


# ---------------------------------------------------------------------------------- data and parallelism


def test_outputs_flow_to_downstream_inputs_and_independent_steps_overlap(tmp_path):
    sleepy = (
        "import time, os; os.makedirs('/opt/ml/processing/out', exist_ok=True); time.sleep(0.8);"
        "open('/opt/ml/processing/out/v.txt', 'w').write(os.environ['V'])"
    )
    read = (
        "import pathlib; p = pathlib.Path('/opt/ml/processing/input');"
        "vals = sorted(f.read_text() for f in p.rglob('*.txt')); assert vals == ['a', 'b'], vals; print(vals)"
    )
    ref = "Steps.{}.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"
    d = definition(
        processing("Left", sleepy, outputs=["out"], env={"V": "a"}),
        processing("Right", sleepy, outputs=["out"], env={"V": "b"}),
        processing(
            "Join", read, inputs=[("l", {"Get": ref.format("Left")}), ("r", {"Get": ref.format("Right")})]
        ),
    )
    record = run_definition(d, home=tmp_path, max_parallel=2)
    assert record.status == "Succeeded", record.failure_reason
    left, right, join = (record.steps[n] for n in ("Left", "Right", "Join"))
    t = datetime.fromisoformat
    assert t(left.started_at) < t(right.ended_at) and t(right.started_at) < t(left.ended_at), "no overlap"
    assert t(join.started_at) >= max(t(left.ended_at), t(right.ended_at))


# ---------------------------------------------------------------------------------------------- caching


def test_cache_hit_on_second_run_and_miss_after_input_change(tmp_path):
    store = S3Store(tmp_path / "s3")
    store.put_bytes("s3://bucket/raw/data.csv", b"1,2,3\n")
    code = "import shutil; shutil.copytree('/opt/ml/processing/input/raw', '/opt/ml/processing/out', dirs_exist_ok=True)"
    step = processing(
        "Copy",
        code,
        inputs=[("raw", "s3://bucket/raw/")],
        outputs=["out"],
        CacheConfig={"Enabled": True, "ExpireAfter": "P30D"},
    )
    first = run_definition(definition(step), home=tmp_path)
    second = run_definition(definition(step), home=tmp_path)
    assert (first.steps["Copy"].cache_hit, second.steps["Copy"].cache_hit) == (False, True)
    assert second.steps["Copy"].attempts == 0
    # The hit reuses the first run's properties, so later steps read the first run's outputs.
    assert second.steps["Copy"].properties == first.steps["Copy"].properties
    assert run_definition(definition(step), home=tmp_path, use_cache=False).steps["Copy"].cache_hit is False

    store.put_bytes("s3://bucket/raw/data.csv", b"4,5,6\n")
    changed = run_definition(definition(step), home=tmp_path)
    assert changed.steps["Copy"].cache_hit is False
    out = changed.steps["Copy"].properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    assert store.path(out + "/data.csv").read_bytes() == b"4,5,6\n"


def test_cache_entry_ignored_once_its_outputs_are_gone(tmp_path):
    code = "import os; os.makedirs('/opt/ml/processing/out', exist_ok=True); open('/opt/ml/processing/out/f', 'w').write('x')"
    step = processing("Make", code, outputs=["out"], CacheConfig={"Enabled": True, "ExpireAfter": "PT1H"})
    first = run_definition(definition(step), home=tmp_path)
    out = first.steps["Make"].properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    S3Store(tmp_path / "s3").path(out + "/f").unlink()
    assert run_definition(definition(step), home=tmp_path).steps["Make"].cache_hit is False


@pytest.mark.parametrize(
    "text, seconds", [("P30D", 30 * 86400), ("PT1H30M", 5400), ("P1W", 7 * 86400), ("PT0.5S", 0.5)]
)
def test_expire_after_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(
    "text, seconds", [("30d", 30 * 86400), ("12h", 12 * 3600), ("45m", 2700), ("2w", 14 * 86400)]
)
def test_expire_after_accepts_the_sdk_short_forms(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["30D", "P", "PT", "P1H"])
def test_bad_expire_after(text):
    with pytest.raises(DefinitionError, match="not an ISO 8601 duration"):
        parse_duration(text)


# ---------------------------------------------------------------------------------------------- retries

# A job whose own error text names capacity and internal errors: SageMaker retries none of it.
CLAIMS_CAPACITY = (
    "import sys; open('/opt/ml/output/message', 'w').write('CapacityError: InternalError: ServiceUnavailable');"
    "sys.exit(1)"
)
EVERY_TYPE = [
    "SageMaker.CAPACITY_ERROR", "SageMaker.RESOURCE_LIMIT", "SageMaker.JOB_INTERNAL_ERROR",
    "Step.THROTTLING", "Step.SERVICE_FAULT",
]  # fmt: skip


def test_a_jobs_own_error_is_never_retried_whatever_its_text(tmp_path):
    policy = {"ExceptionType": EVERY_TYPE, "IntervalSeconds": 0, "BackoffRate": 2, "MaxAttempts": 3}
    d = definition(processing("Claims", CLAIMS_CAPACITY, RetryPolicies=[policy]))
    record = run_definition(d, home=tmp_path)
    assert record.status == "Failed"
    assert record.steps["Claims"].attempts == 1
    assert "CapacityError" in record.steps["Claims"].failure_reason
    kinds = [e["kind"] for e in Home.open(tmp_path).events.for_execution(record.id)]
    assert "step-retry" not in kinds


def test_failure_classification_is_by_type_not_text():
    assert classify_failure(RuntimeFault("sandbox gone")) == "SageMaker.JOB_INTERNAL_ERROR"
    assert classify_failure(RuntimeFault("x", "Step.SERVICE_FAULT")) == "Step.SERVICE_FAULT"
    assert classify_failure(MlopsError("CapacityError: InternalServerError")) is None
    assert classify_failure(OSError(28, "No space left on device")) is None
    assert classify_failure(None) is None


# ------------------------------------------------------------------------------------- failure, resume

CHECK_FLAG = (
    "import sys, pathlib as p; f = p.Path('/opt/ml/processing/input/flag/flag.txt').read_text().strip();"
    "print('flag', f); f == 'fail' and sys.exit('flag says fail'); o = p.Path('/opt/ml/processing/out');"
    "o.mkdir(exist_ok=True); (o / 'ok').write_text(f)"
)


def test_failure_reason_then_resume_reruns_only_failed_and_downstream(tmp_path):
    store = S3Store(tmp_path / "s3")
    store.put_bytes("s3://bucket/flag/flag.txt", b"fail")
    d = definition(
        processing("First", "print('first')"),
        processing(
            "Flagged",
            CHECK_FLAG,
            inputs=[("flag", "s3://bucket/flag/")],
            outputs=["out"],
            DependsOn=["First"],
        ),
        processing(
            "After",
            "import os; print(os.listdir('/opt/ml/processing/input/x'))",
            inputs=[("x", {"Get": "Steps.Flagged.ProcessingOutputConfig.Outputs['out'].S3Output.S3Uri"})],
        ),
    )
    failed = run_definition(d, home=tmp_path)
    assert failed.status == "Failed"
    assert failed.failure_reason.startswith("step Flagged failed: ")
    assert failed.failure_reason.endswith("flag says fail") and "\n" not in failed.failure_reason
    assert statuses(failed) == {"First": "Succeeded", "Flagged": "Failed", "After": "Pending"}
    assert "flag says fail" in failed.steps["Flagged"].failure_reason

    store.put_bytes("s3://bucket/flag/flag.txt", b"pass")
    resumed = run_definition(d, home=tmp_path, resume=failed.id)
    assert resumed.id == failed.id and resumed.status == "Succeeded", resumed.failure_reason
    assert resumed.steps["First"].started_at == failed.steps["First"].started_at  # not re-run
    assert resumed.steps["Flagged"].started_at != failed.steps["Flagged"].started_at
    assert statuses(resumed) == {"First": "Succeeded", "Flagged": "Succeeded", "After": "Succeeded"}


# ------------------------------------------------------------------------------- processes and signals


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "mlops.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_concurrent_runs_in_one_home_do_not_interfere(tmp_path):
    code = (
        "import os, time; os.makedirs('/opt/ml/processing/out', exist_ok=True); time.sleep(1);"
        "open('/opt/ml/processing/out/tag', 'w').write(os.environ['TAG'])"
    )
    d = definition(
        processing("Tag", code, outputs=["out"], env={"TAG": {"Get": "Parameters.Tag"}}),
        parameters=[{"Name": "Tag", "Type": "String", "DefaultValue": "none"}],
    )
    path = tmp_path / "def.json"
    path.write_text(json.dumps(d))
    procs = [
        _cli("run", "--definition", str(path), "--home", str(tmp_path), "--param", f"Tag={t}") for t in "ab"
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    home, store = Home.open(tmp_path), S3Store(tmp_path / "s3")
    runs = [ExecutionRecord.load(home, r["id"]) for r in home.runs.list()]
    tags = set()
    for run in runs:
        uri = run.steps["Tag"].properties["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
        tags.add((run.parameters["Tag"], store.path(uri + "/tag").read_text()))
    assert tags == {("a", "a"), ("b", "b")}
    a, b = (r.steps["Tag"] for r in runs)
    assert a.started_at < b.ended_at and b.started_at < a.ended_at, "the two runs did not overlap"


def test_sigterm_stops_every_job_and_marks_the_execution_stopped(tmp_path):
    d = definition(processing("Sleep", "import time; print('sleeping', flush=True); time.sleep(60)"))
    path = tmp_path / "def.json"
    path.write_text(json.dumps(d))
    proc = _cli("run", "--definition", str(path), "--home", str(tmp_path))
    home = Home.open(tmp_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = home.runs.list()
        if rows and any(s["status"] == "Executing" for s in home.runs.steps(rows[0]["id"])):
            log = list((tmp_path / "executions").rglob("*.log"))
            if log and "sleeping" in log[0].read_text():
                break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("the step never started")
    stopped_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=30)[0]
    assert time.monotonic() - stopped_at < 15
    assert proc.returncode == 130, output
    (row,) = home.runs.list()
    assert row["status"] == "Stopped"
    assert {s["name"]: s["status"] for s in home.runs.steps(row["id"])} == {"Sleep": "Stopped"}
    staging = tmp_path / "s3" / ".tmp"
    assert not staging.exists() or not list(staging.iterdir()), "half-written objects left behind"


def test_stop_event_from_another_thread(tmp_path):
    stop = threading.Event()
    d = definition(
        processing("Sleep", "import time; time.sleep(60)"), processing("Later", "pass", DependsOn=["Sleep"])
    )
    threading.Timer(1.5, stop.set).start()
    started = time.monotonic()
    record = run_definition(d, home=tmp_path, stop=stop)
    assert time.monotonic() - started < 20
    assert record.status == "Stopped"
    assert statuses(record) == {"Sleep": "Stopped", "Later": "Pending"}
