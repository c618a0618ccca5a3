"""Lambda steps, built with the SageMaker SDK v3, served by the local handler config maps their function to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from mlops.errors import ConfigError, DefinitionError
from mlops.local.options import RunOptions
from mlops.local.scheduler import plan, run_definition
from tests.project import load_config

REGION = "us-east-1"
ARN = "arn:aws:lambda:us-east-1:111122223333:function:score-model"
OTHER_ARN = "arn:aws:lambda:us-east-1:111122223333:function:publish"

HANDLERS = textwrap.dedent(
    """
    import os, sys, time

    def score(event, context):
        print(f"scoring n={event['n']}")
        print("to stderr", file=sys.stderr)
        return {
            "score": 0.9 if event["n"] >= 3 else 0.1,
            "label": f"n{event['n']}",
            "context": {
                "function_name": context.function_name,
                "function_version": context.function_version,
                "invoked_function_arn": context.invoked_function_arn,
                "memory_limit_in_mb": context.memory_limit_in_mb,
                "aws_request_id": context.aws_request_id,
                "log_group_name": context.log_group_name,
                "log_stream_name": context.log_stream_name,
                "remaining_ms": context.get_remaining_time_in_millis(),
            },
        }

    def publish(event, context):
        return {"published": "yes:" + event["label"]}

    def boom(event, context):
        raise ValueError("the model registry is unreachable")

    def slow(event, context):
        time.sleep(60)
        return {"score": 1.0, "label": "late"}

    def missing(event, context):
        return {"label": "only a label"}

    def wrong_type(event, context):
        return {"score": "high", "label": "x"}

    def not_a_dict(event, context):
        return [1, 2]

    def crash(event, context):
        os._exit(3)

    def calls_aws(event, context):
        import boto3

        models = boto3.client("sagemaker").list_models()["Models"]  # answered by the run's moto
        return {"score": float(len(models)) + 1, "label": os.environ["AWS_ENDPOINT_URL"]}
    """
)


def sdk_env():
    """Importing the SDK makes boto3 clients: it needs a region (no call is made)."""
    os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
    os.environ.setdefault("AWS_DEFAULT_REGION", REGION)


def sdk_session():
    sdk_env()
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession

    def offline(request, **_):
        raise RuntimeError(f"offline test tried to call AWS: {request.url}")

    boto = boto3.Session(region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
    boto._session.register("before-send", offline)
    return PipelineSession(boto_session=boto, default_bucket="b")


def lambda_pipeline(arn: str = ARN) -> dict:
    """Score (Lambda, outputs score: Float, label: String) -> Check score >= 0.5 -> Publish (Lambda on
    Score's label) | Low (Fail)."""
    sdk_env()
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.parameters import ParameterInteger
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaOutputTypeEnum, LambdaStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    session = sdk_session()
    n = ParameterInteger(name="N", default_value=3)
    score = LambdaStep(
        name="Score",
        lambda_func=Lambda(function_arn=arn, session=session),
        inputs={"n": n},
        outputs=[
            LambdaOutput(output_name="score", output_type=LambdaOutputTypeEnum.Float),
            LambdaOutput(output_name="label", output_type=LambdaOutputTypeEnum.String),
        ],
    )
    publish = LambdaStep(
        name="Publish",
        lambda_func=Lambda(function_arn=OTHER_ARN, session=session),
        inputs={"label": score.properties.Outputs["label"]},
        outputs=[LambdaOutput(output_name="published")],
    )
    check = ConditionStep(
        name="Check",
        conditions=[ConditionGreaterThanOrEqualTo(left=score.properties.Outputs["score"], right=0.5)],
        if_steps=[publish],
        else_steps=[FailStep(name="Low", error_message="score too low")],
    )
    pipeline = Pipeline(
        name="lambda-pipeline", parameters=[n], steps=[score, check], sagemaker_session=session
    )
    return json.loads(pipeline.definition())


@pytest.fixture(scope="module")
def definition():
    return lambda_pipeline()


@pytest.fixture
def handlers_file(tmp_path):
    path = tmp_path / "handlers.py"
    path.write_text(HANDLERS)
    return path


def functions(handlers_file, score="score"):
    return {ARN: f"{handlers_file}:{score}", "publish": f"{handlers_file}:publish"}  # an ARN and a name


def test_the_sdk_step_is_what_the_handler_reads(definition):
    step = definition["Steps"][0]
    assert step["Type"] == "Lambda" and step["FunctionArn"] == ARN
    assert step["Arguments"] == {"n": {"Get": "Parameters.N"}}
    assert step["OutputParameters"] == [
        {"OutputName": "score", "OutputType": "Float"},
        {"OutputName": "label", "OutputType": "String"},
    ]


def test_outputs_feed_the_downstream_condition_and_step(definition, handlers_file, tmp_path):
    record = run_definition(
        definition, home=tmp_path / "home", options=RunOptions(lambda_functions=functions(handlers_file))
    )
    assert record.status == "Succeeded", record.failure_reason
    steps = record.steps
    assert steps["Score"].properties["OutputParameters"] == {"score": 0.9, "label": "n3"}
    assert steps["Check"].properties == {"Outcome": True}
    assert steps["Publish"].properties["OutputParameters"] == {"published": "yes:n3"}
    assert steps["Low"].status == "NotExecuted"
    log = open(steps["Score"].log_paths[0]).read()
    assert "scoring n=3" in log and "to stderr" in log and "START RequestId:" in log


def test_the_context_follows_the_lambda_runtime_contract(tmp_path, handlers_file):
    from mlops.local.handlers.lambda_step import invoke

    result, reason, stopped = invoke(
        f"{handlers_file}:score", ARN, {"n": 1}, 30.0, log_path=tmp_path / "log", region=REGION
    )
    assert reason is None and not stopped
    ctx = result["context"]
    assert ctx["function_name"] == "score-model" and ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == ARN and ctx["memory_limit_in_mb"] == 128
    assert ctx["log_group_name"] == "/aws/lambda/score-model" and "[$LATEST]" in ctx["log_stream_name"]
    assert len(ctx["aws_request_id"]) == 36
    assert 0 < ctx["remaining_ms"] <= 30_000


def test_a_low_score_takes_the_else_branch(definition, handlers_file, tmp_path):
    record = run_definition(
        definition, home=tmp_path / "home", params={"N": 1},
        options=RunOptions(lambda_functions=functions(handlers_file)),
    )  # fmt: skip
    assert record.status == "Failed" and record.failure_reason == "score too low"
    assert record.steps["Score"].properties["OutputParameters"]["score"] == 0.1
    assert record.steps["Publish"].status == "NotExecuted"


@pytest.mark.parametrize(
    "function, fragment",
    [
        ("boom", "ValueError: the model registry is unreachable"),
        ("missing", "output score: not in the dict that the function returned (keys: label)"),
        ("wrong_type", "output score: the function returned str 'high', not Float"),
        ("not_a_dict", "returned list, not a dict"),
        ("crash", "ended with exit code 3"),
        ("nothere", "has no function nothere"),
    ],
)
def test_a_failing_function_fails_the_step_naming_why(
    definition, handlers_file, tmp_path, function, fragment
):
    record = run_definition(
        definition, home=tmp_path / "home",
        options=RunOptions(lambda_functions=functions(handlers_file, score=function)),
    )  # fmt: skip
    assert record.status == "Failed"
    step = record.steps["Score"]
    assert step.status == "Failed" and fragment in step.failure_reason, step.failure_reason
    assert "score-model" in step.failure_reason
    assert "Traceback" not in record.failure_reason
    assert record.steps["Check"].status == "Pending"


def test_a_timeout_kills_the_function(definition, handlers_file, tmp_path):
    timed = json.loads(json.dumps(definition))
    timed["Steps"][0]["Timeout"] = 1  # seconds (a duration such as "PT1S" works too)
    started = time.monotonic()
    record = run_definition(
        timed, home=tmp_path / "home", options=RunOptions(lambda_functions=functions(handlers_file, "slow"))
    )
    assert time.monotonic() - started < 20
    assert record.status == "Failed"
    assert "Task timed out after 1 seconds" in record.steps["Score"].failure_reason


def test_stopping_the_execution_stops_the_function(definition, handlers_file, tmp_path):
    import threading

    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    record = run_definition(
        definition, home=tmp_path / "home",
        options=RunOptions(lambda_functions=functions(handlers_file, "slow"), stop=stop),
    )  # fmt: skip
    assert time.monotonic() - started < 20
    assert record.status == "Stopped" and record.steps["Score"].status == "Stopped"


def test_the_function_reaches_the_runs_local_aws_stand_ins_not_aws(definition, handlers_file, tmp_path):
    record = run_definition(
        definition,
        home=tmp_path / "home",
        options=RunOptions(lambda_functions=functions(handlers_file, "calls_aws")),
    )
    assert record.status == "Succeeded", record.failure_reason
    assert record.steps["Score"].properties["OutputParameters"]["label"].startswith("http://127.0.0.1:")


def test_a_module_target_and_a_qualified_arn(tmp_path, handlers_file, monkeypatch):
    monkeypatch.chdir(tmp_path)  # module targets import from the working directory
    qualified = lambda_pipeline(ARN + ":prod")
    record = run_definition(
        qualified, home=tmp_path / "home",
        options=RunOptions(lambda_functions={ARN: "handlers:score", OTHER_ARN: "handlers:publish"}),
    )  # fmt: skip
    assert record.status == "Succeeded", record.failure_reason


def test_an_unmapped_arn_is_refused_before_start_naming_it_and_the_key(definition, handlers_file, tmp_path):
    with pytest.raises(DefinitionError) as err:
        plan(definition, lambda_functions={"publish": f"{handlers_file}:publish"})
    message = str(err.value)
    assert ARN in message and "local.lambda_functions" in message and "\n" not in message
    with pytest.raises(DefinitionError):
        run_definition(definition, home=tmp_path / "home")
    from mlops.local.state.home import Home

    assert Home.open(tmp_path / "home").runs.list() == []


def _mlops(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_PROJECT_ROOT", "MLOPS_HOME")}
    return subprocess.run(
        [sys.executable, "-m", "mlops.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


def test_run_check_and_run_with_a_mapping_file(definition, handlers_file, tmp_path):
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(definition))
    proc = _mlops("run", "--check", str(path), "--json", cwd=tmp_path)
    doc = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [b for b in doc["blockers"] if "Lambda function" in b] == [
        f"step Score: no local handler for Lambda function {ARN}: set config local.lambda_functions: "
        f"{{'{ARN}': 'package.module:function'}} (or mlops run --lambda-functions FILE.yaml)",
        f"step Publish: no local handler for Lambda function {OTHER_ARN}: set config local.lambda_functions: "
        f"{{'{OTHER_ARN}': 'package.module:function'}} (or mlops run --lambda-functions FILE.yaml)",
    ]
    assert not any("is not supported" in b for b in doc["blockers"])
    proc = _mlops("run", "--definition", str(path), "--home", str(tmp_path / "home"), cwd=tmp_path)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1 and ARN in proc.stderr
    mapping = tmp_path / "lambda_functions.yaml"
    mapping.write_text(f"{ARN}: handlers.py:score\npublish: handlers.py:publish\n")  # relative to the file
    proc = _mlops("run", "--check", str(path), "--lambda-functions", str(mapping), "--json", cwd="/")
    assert proc.returncode == 0 and json.loads(proc.stdout)["runnable"], proc.stdout
    proc = _mlops(
        "run", "--definition", str(path), "--lambda-functions", str(mapping), "--home", str(tmp_path / "home"),
        cwd="/",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Succeeded" in proc.stdout


def test_config_validates_the_mapping_with_one_line_naming_the_key():
    cfg = load_config("local", environ={"MLOPS__LOCAL__LAMBDA_FUNCTIONS": "{my-fn: 'pkg.mod:handler'}"})
    assert (
        cfg.local.lambda_functions == {"my-fn": "pkg.mod:handler"} and cfg.local.callback_timeout_s == 86400
    )
    with pytest.raises(ConfigError) as err:
        load_config("local", environ={"MLOPS__LOCAL__LAMBDA_FUNCTIONS": "{my-fn: 'no function here'}"})
    assert str(err.value) == (
        "$MLOPS__LOCAL__LAMBDA_FUNCTIONS: local.lambda_functions: my-fn: 'no function here' is not "
        "'package.module:function' or 'path/to/file.py:function'"
    )
    with pytest.raises(ConfigError) as err:
        load_config("local", environ={"MLOPS__LOCAL__CALLBACK_TIMEOUT_S": "0"})
    assert "local.callback_timeout_s: must be >= 1" in str(err.value)
