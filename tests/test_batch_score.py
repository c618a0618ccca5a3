"""The batch-score pipeline: its compiled definition, config, schedule, the latest-Approved rule at start
and at run time, and `mlops run` scoring a small data set on the model's own serving runtime."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore.validate import ParamValidator

from mlops.aws import infra
from mlops.cli.main import main
from mlops.definition.graph import mermaid
from mlops.definition.validate import validate_definition
from mlops.errors import ConfigError
from mlops.local.runtime import JobRequestError
from mlops.local.s3store import S3Store
from mlops.local.state.home import Home
from pipelines.project import SCORE
from steps.batch_score.code import resolve_model, summarize
from tests.aws.conftest import account, aws, cfg, ci_config_dir, moto, moto_endpoint  # noqa: F401 (fixtures)
from tests.project import PROJECT, load_config

from .test_compile import steps_by_name

GROUP = "digits-classifier"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.5-cpu-py311"
ARN_PREFIX = "arn:aws:sagemaker:us-east-1:123456789012:model-package"


def _valid(service: str, operation: str, request: dict) -> None:
    shape = botocore.session.get_session().get_service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(request, shape)
    assert not report.has_errors(), report.generate_report()


# ------------------------------------------------------------------------------------------ definition


def test_dag_parameters_and_the_model_from_the_resolved_package(compiled_local):
    d = compiled_local.definition(SCORE)
    steps = steps_by_name(d)
    assert {n: s["Type"] for n, s in steps.items()} == {
        "ResolveModelPackage": "Processing",
        "CreateModel": "Model",
        "BatchTransform": "Transform",
        "Summarize": "Processing",
    }
    config = load_config("local")
    assert {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]} == {
        "InputDataUri": f"{config.aws.s3_root}/batch-score/input/",
        "OutputUri": f"{config.aws.s3_root}/batch-score/output",
        "ModelPackageArn": "",  # empty: the latest Approved version, resolved at start or when it runs
    }
    resolve = steps["ResolveModelPackage"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert resolve == [
        "--model-package-group",
        GROUP,
        "--model-package-arn",
        {"Get": "Parameters.ModelPackageArn"},
    ]
    resolved = {"Std:JsonGet": {"Path": "ModelPackageArn",
                                "PropertyFile": {"Get": "Steps.ResolveModelPackage.PropertyFiles.ResolvedModelPackage"}}}  # fmt: skip
    # the model is model-deploy's own CreateModel: from the package, named by SageMaker
    assert steps["CreateModel"]["Arguments"]["Containers"] == [{"ModelPackageName": resolved}]
    assert "ModelName" not in steps["CreateModel"]["Arguments"]
    assert steps["BatchTransform"]["Arguments"]["ModelName"] == {"Get": "Steps.CreateModel.ModelName"}
    summary = steps["Summarize"]["Arguments"]
    assert summary["AppSpecification"]["ContainerArguments"] == ["--model-package-arn", resolved]
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in summary["ProcessingInputs"]}
    assert inputs["predictions"] == {"Get": "Steps.BatchTransform.TransformOutput.S3OutputPath"}
    assert validate_definition(d) == []
    graph = mermaid(d)
    assert "ResolveModelPackage --> CreateModel" in graph and "BatchTransform --> Summarize" in graph


def test_transform_settings_come_from_config(compiled_prod):
    config = load_config("prod")
    request = steps_by_name(compiled_prod.definition(SCORE))["BatchTransform"]["Arguments"]
    assert request["TransformResources"] == {
        "InstanceCount": 2, "InstanceType": "ml.c5.xlarge", "VolumeKmsKeyId": "alias/digits-prod",
    }  # fmt: skip
    assert (request["BatchStrategy"], request["MaxPayloadInMB"], request["MaxConcurrentTransforms"]) == (
        "SingleRecord", 1, 4,
    )  # fmt: skip
    assert request["TransformInput"]["ContentType"] == "text/csv"
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"] == {
        "Get": "Parameters.InputDataUri"
    }
    output = request["TransformOutput"]
    assert (output["Accept"], output["AssembleWith"], output["KmsKeyId"]) == (
        "application/json", "Line", "alias/digits-prod",
    )  # fmt: skip
    assert output["S3OutputPath"] == {"Std:Join": {"On": "/", "Values": [
        {"Get": "Parameters.OutputUri"}, {"Get": "Execution.PipelineExecutionId"}, "predictions"]}}  # fmt: skip
    assert "DataProcessing" not in request  # JoinSource None: CSV rows in, JSON answers out
    assert request["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 600}
    job = steps_by_name(compiled_prod.definition(SCORE))["ResolveModelPackage"]["Arguments"]
    assert job["ProcessingResources"]["ClusterConfig"]["InstanceType"] == config.batch_score.job.instance_type
    assert validate_definition(compiled_prod.definition(SCORE)) == []


def test_the_compile_is_deterministic_and_the_cli_validates_it(compiled_local, tmp_path, capsys):
    assert main(["compile", "--env", "local", "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{SCORE}.json").read_text() == compiled_local.definitions[SCORE]
    capsys.readouterr()
    assert main(["validate", "--env", "local"]) == 0
    assert "ok batch-score: config local, 4 top-level steps" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "variable, value, message",
    [
        (
            "TRANSFORM__ACCEPT",
            "text/csv",
            "batch_score: transform.accept 'text/csv' is not one the model serves",
        ),
        ("TRANSFORM__CONTENT_TYPE", "application/x-npy", "transform.content_type 'application/x-npy'"),
        ("TRANSFORM__JOIN_SOURCE", "Input", "batch_score.transform: join_source Input needs content_type"),
        ("TRANSFORM__BATCH_STRATEGY", "Mini", "batch_score.transform.batch_strategy: must be one of"),
        ("TRANSFORM__MAX_PAYLOAD_MB", "30", "max_payload_mb x max_concurrent_transforms must be <= 100"),
        (
            "TRANSFORM__INSTANCE_TYPE",
            "m5.large",
            "batch_score.transform.instance_type: not a valid instance type",
        ),
        (
            "OUTPUT_PREFIX",
            "out/../../etc",
            "batch_score.output_prefix: must be a key prefix below aws.prefix",
        ),
        ("INPUT_PREFIX", "/abs", "batch_score.input_prefix: must be a key prefix"),
        ("PIPELINE_NAME", "batch score", "batch_score.pipeline_name: not a valid SageMaker name"),
        ("SCHEDULE__CRON", "daily", "batch_score.schedule.cron: not a valid"),
        ("SCHEDULE__TIMEZONE", "Mars/Olympus", "batch_score.schedule.timezone: unknown time zone"),
    ],
)
def test_bad_batch_score_config_is_one_line_naming_the_key(config_dir, variable, value, message):
    with pytest.raises(ConfigError) as err:
        load_config("local", environ={f"MLOPS__BATCH_SCORE__{variable}": value})
    assert message in str(err.value) and f"$MLOPS__BATCH_SCORE__{variable}" in str(err.value)
    assert "\n" not in str(err.value)


def test_overlays_change_what_differs():
    dev, prod = load_config("dev"), load_config("prod")
    assert dev.batch_score.schedule.enabled is False and prod.batch_score.schedule.enabled is True
    assert prod.batch_score.schedule.timezone == "Europe/Dublin"
    assert (prod.batch_score.transform.instance_type, prod.batch_score.transform.instance_count) == (
        "ml.c5.xlarge", 2,
    )  # fmt: skip
    assert dev.batch_score.transform.instance_count == 1


# --------------------------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("env, state, window", [("prod", "ENABLED", 30), ("dev", "DISABLED", 30)])
def test_the_schedule_starts_batch_score_with_the_configured_cron(env, state, window):
    config = load_config(env)
    params = infra.render_parameters(config, repo_url="https://github.com/example/digits.git")
    template = infra.load_template(infra.template_path(PROJECT.root))
    assert set(config.infra_parameters()) <= set(template["Parameters"])
    resolver = infra.Resolver(template, params, "123456789012", config.aws.region)
    resolver.attributes["DeadLetterQueue.Arn"] = f"arn:aws:sqs:{config.aws.region}:123456789012:digits-dlq"
    resolver.attributes["SchedulerRole.Arn"] = "arn:aws:iam::123456789012:role/scheduler"
    request = resolver.resource("BatchScoreSchedule")
    _valid("scheduler", "CreateSchedule", request)
    pipeline = (
        f"arn:aws:sagemaker:{config.aws.region}:123456789012:pipeline/{config.batch_score.pipeline_name}"
    )
    assert request["Name"] == f"digits-{env}-batch-score"
    assert (request["ScheduleExpression"], request["ScheduleExpressionTimezone"], request["State"]) == (
        config.batch_score.schedule.cron, config.batch_score.schedule.timezone, state,
    )  # fmt: skip
    assert request["FlexibleTimeWindow"] == {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": window}
    assert request["Target"]["Arn"] == pipeline
    assert "SageMakerPipelineParameters" not in request["Target"]  # defaults: resolved when the run executes
    assert request["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == config.retry.max_attempts
    # the scheduler's role may start it, the execution role may run its jobs and list the registry
    role = resolver.resource("SchedulerRole")
    starts = [s["Resource"] for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]
              if s["Action"] == "sagemaker:StartPipelineExecution"]  # fmt: skip
    assert pipeline in starts
    execution = resolver.resource("SageMakerExecutionRole")
    statements = [s for p in execution["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert any("sagemaker:CreateTransformJob" in s["Action"] for s in statements)
    assert any(s["Action"] == "sagemaker:ListModelPackages" for s in statements)


# ------------------------------------------------------------------------------- the latest-Approved rule


def _register(sm, group: str, statuses) -> list[str]:
    sm.create_model_package_group(ModelPackageGroupName=group)
    spec = {"Containers": [{"Image": "img:1", "ModelDataUrl": "s3://b/m.tar.gz"}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["application/json"]}  # fmt: skip
    return [
        sm.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus=s, InferenceSpecification=spec
        )["ModelPackageArn"]
        for s in statuses
    ]


def test_the_resolve_job_picks_the_newest_approved_version_from_sagemakers_registry(moto):  # noqa: F811
    sm = boto3.client("sagemaker")
    arns = _register(sm, GROUP, ["Approved", "Approved", "PendingManualApproval"])
    resolved = resolve_model.resolve(GROUP, "", lambda: sm)
    assert (resolved["ModelPackageArn"], resolved["ResolvedBy"]) == (arns[1], "registry")
    with pytest.raises(resolve_model.ResolveError, match="model package group other has no Approved version"):
        resolve_model.resolve("other", "", lambda: sm)
    # a start-resolved ARN is written through, if it is a version of the group
    assert (
        resolve_model.resolve(GROUP, arns[0], lambda: pytest.fail("no registry call"))["ModelPackageArn"]
        == arns[0]
    )
    with pytest.raises(resolve_model.ResolveError, match="is not a version of model package group other"):
        resolve_model.resolve("other", arns[0], lambda: sm)


def test_mlops_start_passes_the_latest_approved_version_or_refuses(account, cfg, capsys):  # noqa: F811
    from mlops.aws import pipelines_api as api
    from mlops.compile.compiler import compile_cached

    compiled = compile_cached(PROJECT, cfg)
    name = compiled.pipeline_names[SCORE]
    api.upsert(account, cfg, {SCORE: compiled.definitions[SCORE]}, {SCORE: name}, commit="a")
    assert main(["start", "--env", "ci", "--pipeline", SCORE]) == 1
    err = capsys.readouterr().err
    assert f"model package group {GROUP} has no Approved version" in err and err.count("\n") == 1

    sm = boto3.client("sagemaker")
    arns = _register(sm, GROUP, ["Approved", "Approved", "PendingManualApproval", "Rejected"])
    assert main(["start", "--env", "ci", "--pipeline", SCORE, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["pipeline"] == name
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=doc["execution_arn"])
    assert params["PipelineParameters"] == [{"Name": "ModelPackageArn", "Value": arns[1]}]
    # a version named on the command line is used as given, if it is Approved
    assert main(["start", "--env", "ci", "--pipeline", SCORE, "--param", f"ModelPackageArn={arns[0]}",
                 "--format", "json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    params = sm.list_pipeline_parameters_for_execution(PipelineExecutionArn=doc["execution_arn"])
    assert params["PipelineParameters"] == [{"Name": "ModelPackageArn", "Value": arns[0]}]
    assert main(["start", "--env", "ci", "--pipeline", SCORE, "--param", f"ModelPackageArn={arns[2]}"]) == 1
    assert f"ModelPackageArn {arns[2]} is not an Approved version" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- summary job


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _answer(label: int) -> str:
    return json.dumps({"predictions": [{"label": label, "probabilities": [0.1] * 10}]})


@pytest.mark.parametrize(
    "inputs, outputs, passed, reason",
    [
        ({"a.csv": "1,2\n3,4\n", "s/b.csv": "5,6\n"},
         {"a.csv.out": f"{_answer(1)}\n{_answer(2)}\n", "s/b.csv.out": _answer(3)}, True, ""),
        ({"a.csv": "1,2\n3,4\n"}, {"a.csv.out": json.dumps({"predictions": [{"label": 1}, {"label": 2}]})},
         True, ""),  # MultiRecord: one answer line for a mini-batch
        ({"a.csv": "1\n"}, {"a.csv.out": json.dumps({"SageMakerInput": [1], "SageMakerOutput": json.loads(_answer(4))})},
         True, ""),  # JoinSource Input
        ({"a.csv": "1,2\n3,4\n"}, {"a.csv.out": _answer(1)}, False, "a.csv: 2 rows but 1 predictions"),
        ({"a.csv": "1\n", "b.csv": "2\n"}, {"a.csv.out": _answer(1)}, False, "b.csv: no b.csv.out"),
        ({"a.csv": "1\n"}, {"a.csv.out": "oops\n"}, False, "a.csv.out line 1 is not a model answer"),
        ({}, {}, False, "no input files to summarise"),
    ],
    ids=["single-record", "multi-record", "joined", "missing-row", "missing-file", "not-json", "empty"],
)  # fmt: skip
def test_the_summary_counts_rows_and_predictions_per_file(tmp_path, inputs, outputs, passed, reason):
    data = _write(tmp_path / "data", inputs)
    data.mkdir(exist_ok=True)
    predictions = _write(tmp_path / "predictions", outputs)
    predictions.mkdir(exist_ok=True)
    summary = summarize.summarize(data, predictions, "arn:x")
    assert summary["passed"] is passed
    assert reason in summary["reason"] if reason else summary["reason"] == ""
    if passed:
        assert summary["rows"] == summary["predictions"] == sum(t.count("\n") or 1 for t in inputs.values())


# ------------------------------------------------------------------------------- end to end, locally


def _model_tar(seed: int) -> bytes:
    """A model.tar.gz as train.py writes it (weights, model_config.json, code/inference.py), untrained."""
    import tempfile

    import torch

    from steps.train.code.model import DigitsMLP
    from steps.train.code.train import save_model

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as directory:
        save_model(
            DigitsMLP(64, 16, 10), {"input_size": 64, "hidden_units": 16, "num_classes": 10}, Path(directory)
        )
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(directory, arcname=".")
    return buffer.getvalue()


def _register_local(home: Home, seed: int, status: str) -> dict:
    """A version as RegisterModel records it (the serving image, the model data), without training."""
    uri = f"s3://mlops-local/digits/local/models/seed-{seed}/model.tar.gz"
    S3Store(home.s3_root).put_bytes(uri, _model_tar(seed))
    container = {"Image": IMAGE, "ModelDataUrl": uri, "Environment": {"SAGEMAKER_PROGRAM": "inference.py"}}
    return home.registry.register(
        GROUP, ARN_PREFIX, approval_status=status, model_data_url=uri, image=IMAGE,
        content_types=["application/json", "text/csv"], metrics={},
        request={"InferenceSpecification": {"Containers": [container]}},
    )  # fmt: skip


def _expected(seed: int, rows: list[str]) -> list[dict]:
    """What code/inference.py answers for each row alone, in-process."""
    import tempfile

    from steps.train.code import inference

    with tempfile.TemporaryDirectory() as directory:
        with tarfile.open(fileobj=io.BytesIO(_model_tar(seed)), mode="r:gz") as tar:
            tar.extractall(directory, filter="data")
        model = inference.model_fn(directory)
        return [
            json.loads(inference.output_fn(inference.predict_fn(inference.input_fn(row, "text/csv"), model)))
            for row in rows
        ]


@pytest.fixture(scope="module")
def scoring_rows():
    from sklearn.datasets import load_digits

    pixels = load_digits().data.astype(int)
    return {"day-1.csv": [",".join(map(str, r)) for r in pixels[:23]],
            "late/day-2.csv": [",".join(map(str, r)) for r in pixels[100:109]]}  # fmt: skip


@pytest.fixture(scope="module")
def scored_home(tmp_path_factory):
    home = Home.open(tmp_path_factory.mktemp("batch-score-home"))
    versions = [_register_local(home, seed, status)
                for seed, status in ((1, "Approved"), (2, "Approved"), (3, "PendingManualApproval"))]  # fmt: skip
    return home, versions


@pytest.mark.slow
def test_mlops_run_scores_each_row_in_order_with_the_latest_approved_version(
    scored_home, scoring_rows, capsys
):
    home, versions = scored_home
    store = S3Store(home.s3_root)
    uri = "s3://mlops-local/digits/local/scoring/2026-01-01/"
    for name, rows in scoring_rows.items():
        store.put_bytes(uri + name, ("\n".join(rows) + "\n").encode())
    out = "s3://mlops-local/digits/local/scored"
    code = main(["run", "--env", "local", "--pipeline", SCORE, "--home", str(home.root),
                 "--param", f"InputDataUri={uri}", "--param", f"OutputUri={out}"])  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err
    execution = home.runs.get(home.runs.list(limit=1)[0]["id"])
    assert execution["status"] == "Succeeded"
    latest = versions[1]["arn"]  # v2: v3 is newer but PendingManualApproval
    assert execution["parameters"]["ModelPackageArn"] == latest

    prefix = f"{out}/{execution['id']}/predictions/"
    assert sorted(store.list(prefix)) == [prefix + "day-1.csv.out", prefix + "late/day-2.csv.out"]
    for name, rows in scoring_rows.items():
        lines = store.path(f"{prefix}{name}.out").read_text().splitlines()
        assert len(lines) == len(rows)  # one prediction per input row ...
        for got, want in zip(lines, _expected(2, rows), strict=True):  # ... in order, from v2's model
            (p,), (q,) = json.loads(got)["predictions"], want["predictions"]
            assert p["label"] == q["label"]
            assert p["probabilities"] == pytest.approx(q["probabilities"], abs=1e-5)
    summary = json.loads(store.path(f"{out}/{execution['id']}/summary/summary.json").read_text())
    assert (summary["passed"], summary["rows"], summary["predictions"], summary["files"]) == (True, 32, 32, 2)
    assert summary["model_package_arn"] == latest


def test_with_nothing_approved_the_run_is_refused_before_it_starts(tmp_path, capsys):
    home = Home.open(tmp_path / "home")
    _register_local(home, 1, "PendingManualApproval")
    code = main(["run", "--env", "local", "--pipeline", SCORE, "--home", str(home.root)])
    printed = capsys.readouterr()
    assert code == 1
    assert (
        printed.err.count("\n") == 1 and f"model package group {GROUP} has no Approved version" in printed.err
    )
    assert "compiling" not in printed.out  # refused before anything was compiled, seeded or run
    assert home.runs.list() == []
    # nor does a version named at start run unless it is Approved
    pending = f"{ARN_PREFIX}/{GROUP}/1"
    assert main(["run", "--env", "local", "--pipeline", SCORE, "--home", str(home.root),
                 "--param", f"ModelPackageArn={pending}"]) == 1  # fmt: skip
    err = capsys.readouterr().err
    assert f"ModelPackageArn {pending} is not an Approved version of model package group {GROUP}" in err
    assert home.runs.list() == []


def test_the_transform_serves_the_packages_container(tmp_path):
    from mlops.local.handlers.transform import recorded_model

    home = Home.open(tmp_path / "home")
    approved, pending = _register_local(home, 1, "Approved"), _register_local(home, 2, "Rejected")
    for name, arn in (("m-ok", approved["arn"]), ("m-no", pending["arn"]), ("m-gone", f"{ARN_PREFIX}/x/9")):
        home.registry.record_model(name, f"arn:model/{name}", "e", "CreateModel",
                                   {"Containers": [{"ModelPackageName": arn}], "ExecutionRoleArn": "r"})  # fmt: skip
    model = recorded_model(home, "m-ok")
    assert model["PrimaryContainer"] == {
        "Image": IMAGE, "ModelDataUrl": approved["model_data_url"], "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
    }  # fmt: skip
    assert "Containers" not in model and model["ExecutionRoleArn"] == "r"
    with pytest.raises(JobRequestError, match="is Rejected, not Approved"):
        recorded_model(home, "m-no")
    with pytest.raises(JobRequestError, match="is not in the local registry"):
        recorded_model(home, "m-gone")
