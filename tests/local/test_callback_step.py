"""Callback steps, built with the SageMaker SDK v3: the run waits on the local queue and the real CLI
(``mlops callback list | succeed | fail``, in a subprocess) completes the token."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from mlops.local.handlers.callback import Callbacks
from mlops.local.options import RunOptions
from mlops.local.scheduler import run_definition
from mlops.local.state.home import Home
from tests.local.test_lambda_step import HANDLERS, OTHER_ARN, sdk_env, sdk_session

QUEUE = "https://sqs.us-east-1.amazonaws.com/111122223333/pipeline_callbacks"


def callback_pipeline() -> dict:
    """Prep (Callback: rows Integer, data String, on a parameter) -> Check rows >= 10 -> Publish (Lambda on
    Prep's data) | TooFew (Fail)."""
    sdk_env()
    from sagemaker.core.lambda_helper import Lambda
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.functions import Join
    from sagemaker.core.workflow.parameters import ParameterString
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackOutputTypeEnum, CallbackStep
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.lambda_step import LambdaOutput, LambdaStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    session = sdk_session()
    day = ParameterString(name="Day", default_value="2024-01-01")
    prep = CallbackStep(
        name="Prep",
        sqs_queue_url=QUEUE,
        inputs={"input": "s3://b/raw/", "output": Join(on="/", values=["s3://b/prepared", day])},
        outputs=[
            CallbackOutput(output_name="rows", output_type=CallbackOutputTypeEnum.Integer),
            CallbackOutput(output_name="data", output_type=CallbackOutputTypeEnum.String),
        ],
    )
    publish = LambdaStep(
        name="Publish",
        lambda_func=Lambda(function_arn=OTHER_ARN, session=session),
        inputs={"label": prep.properties.Outputs["data"]},
        outputs=[LambdaOutput(output_name="published")],
    )
    check = ConditionStep(
        name="Check",
        conditions=[ConditionGreaterThanOrEqualTo(left=prep.properties.Outputs["rows"], right=10)],
        if_steps=[publish],
        else_steps=[FailStep(name="TooFew", error_message="too few rows")],
    )
    pipeline = Pipeline(
        name="callback-pipeline", parameters=[day], steps=[prep, check], sagemaker_session=session
    )
    return json.loads(pipeline.definition())


@pytest.fixture(scope="module")
def definition():
    return callback_pipeline()


@pytest.fixture
def options(tmp_path):
    path = tmp_path / "handlers.py"
    path.write_text(HANDLERS)
    return RunOptions(lambda_functions={OTHER_ARN: f"{path}:publish"})


def mlops(*args, cwd):
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_PROJECT_ROOT", "MLOPS_HOME")}
    return subprocess.run(
        [sys.executable, "-m", "mlops.cli", *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


class Background:
    """A run in a thread, so that the test can answer its callback."""

    def __init__(self, definition, home, options, **settings):
        self.home = Home.open(home)
        self.record = None
        self.error = None
        self.thread = threading.Thread(target=self._run, args=(definition, options, settings), daemon=True)
        self.thread.start()

    def _run(self, definition, options, settings):
        try:
            self.record = run_definition(definition, home=self.home, options=options, **settings)
        except BaseException as err:  # reported by result()
            self.error = err

    def waiting(self, timeout=60.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = Callbacks(self.home).waiting()
            if rows:
                return rows[0]
            assert self.thread.is_alive(), self.error or self.record
            time.sleep(0.1)
        raise AssertionError("no callback waited")

    def result(self, timeout=60.0):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the run did not end"
        if self.error:
            raise self.error
        return self.record


def test_the_cli_completes_the_callback_and_its_outputs_are_used_downstream(definition, options, tmp_path):
    home = tmp_path / "home"
    run = Background(definition, home, options)
    row = run.waiting()
    listing = mlops("callback", "list", "--home", str(home), "--format", "json", cwd=tmp_path)
    assert listing.returncode == 0, listing.stderr
    [shown] = json.loads(listing.stdout)
    token = shown["token"]
    assert token == row["token"] and len(token) == 10 and token.isalnum()
    assert shown["step"] == "Prep" and shown["queue"] == QUEUE
    assert shown["arguments"] == {"input": "s3://b/raw/", "output": "s3://b/prepared/2024-01-01"}
    message = shown["message"]
    assert message == {
        "token": token,
        "pipelineExecutionArn": message["pipelineExecutionArn"],
        "arguments": shown["arguments"],
        "status": "Executing",
    }
    assert message["pipelineExecutionArn"].endswith(f"/execution/{shown['execution_id']}")
    table = mlops("callback", "list", "--home", str(home), cwd=tmp_path)
    assert token in table.stdout and "Prep" in table.stdout and "rows: Integer" in table.stdout
    # a value that is not of the declared type is refused; the token keeps waiting
    bad = mlops("callback", "succeed", token, "--output", "rows=many", "--output", "data=x", "--home", str(home),
                cwd=tmp_path)  # fmt: skip
    assert bad.returncode != 0 and bad.stderr.strip() == "error: output rows: 'many' is not Integer"
    missing = mlops("callback", "succeed", token, "--output", "rows=3", "--home", str(home), cwd=tmp_path)
    assert missing.returncode != 0 and "needs --output for data" in missing.stderr
    done = mlops(
        "callback", "succeed", token, "--output", "rows=12", "--output", "data=s3://b/prepared/2024-01-01",
        "--home", str(home), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = run.result()
    assert record.status == "Succeeded", record.failure_reason
    assert record.steps["Prep"].properties["OutputParameters"] == {
        "rows": 12,
        "data": "s3://b/prepared/2024-01-01",
    }
    assert record.steps["Check"].properties == {"Outcome": True}
    assert record.steps["Publish"].properties["OutputParameters"] == {
        "published": "yes:s3://b/prepared/2024-01-01"
    }
    # completing it again is a one-line error
    again = mlops("callback", "succeed", token, "--output", "rows=1", "--output", "data=y", "--home", str(home),
                  cwd=tmp_path)  # fmt: skip
    assert again.returncode != 0
    assert again.stderr.strip() == f"error: callback token {token} is already completed (Succeeded)"
    assert (
        json.loads(mlops("callback", "list", "--home", str(home), "--format", "json", cwd=tmp_path).stdout)
        == []
    )


def test_fail_with_a_reason_fails_the_step(definition, options, tmp_path):
    home = tmp_path / "home"
    run = Background(definition, home, options)
    token = run.waiting()["token"]
    proc = mlops(
        "callback", "fail", token, "--reason", "the Glue job failed", "--home", str(home), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    record = run.result()
    assert record.status == "Failed"
    assert (
        record.steps["Prep"].status == "Failed"
        and record.steps["Prep"].failure_reason == "the Glue job failed"
    )
    assert "the Glue job failed" in record.failure_reason
    assert record.steps["Check"].status == "Pending"


def test_the_step_timeout_fails_it(definition, options, tmp_path):
    timed = json.loads(json.dumps(definition))
    timed["Steps"][0]["Timeout"] = "PT1S"
    started = time.monotonic()
    record = run_definition(timed, home=tmp_path / "home", options=options)
    assert time.monotonic() - started < 20
    assert record.status == "Failed"
    assert "not completed within 1 s" in record.steps["Prep"].failure_reason
    with Home.open(tmp_path / "home").db() as con:
        assert [r["status"] for r in con.execute("SELECT status FROM callbacks")] == ["TimedOut"]


def test_without_a_step_timeout_the_configured_default_applies(definition, options, tmp_path):
    import dataclasses

    record = run_definition(
        definition, home=tmp_path / "home", options=dataclasses.replace(options, callback_timeout_s=1)
    )
    assert record.status == "Failed" and "not completed within 1 s" in record.steps["Prep"].failure_reason


def test_stopping_the_execution_stops_the_waiting_step(definition, options, tmp_path):
    import dataclasses

    stop = threading.Event()
    home = tmp_path / "home"
    run = Background(definition, home, dataclasses.replace(options, stop=stop))
    token = run.waiting()["token"]
    stop.set()
    record = run.result()
    assert record.status == "Stopped" and record.steps["Prep"].status == "Stopped"
    row = Callbacks(Home.open(home)).get(token)
    assert row["status"] == "Stopped" and row["message"]["status"] == "Stopping"
    late = mlops("callback", "succeed", token, "--output", "rows=1", "--output", "data=x", "--home", str(home),
                 cwd=tmp_path)  # fmt: skip
    assert late.returncode != 0 and "already completed (Stopped)" in late.stderr


def test_an_unknown_token_is_a_one_line_error(tmp_path):
    home = tmp_path / "home"
    for args in (["succeed", "NoSuchTokn", "--output", "a=1"], ["fail", "NoSuchTokn", "--reason", "r"]):
        proc = mlops("callback", *args, "--home", str(home), cwd=tmp_path)
        assert proc.returncode != 0
        assert proc.stderr.strip().splitlines() == [f"error: unknown callback token 'NoSuchTokn' in {home}"]
        assert "Traceback" not in proc.stderr


def test_run_check_lists_the_callback_step_as_runnable(definition, options, tmp_path):
    from mlops.local.check import check

    result = check(definition, lambda_functions=dict(options.lambda_functions))
    assert result.runnable, result.blockers
    [view] = [v for v in result.steps if v.name == "Prep"]
    assert view.type == "Callback" and view.image == QUEUE and "mlops callback" in view.runtime


def test_a_resumed_execution_supersedes_the_token_of_the_run_that_died(tmp_path):
    home = Home.open(tmp_path / "home")
    home.runs.create("exec1", "p", {"Steps": []}, {})
    queue = Callbacks(home)
    first = {"token": "AAAAAAAAAA", "pipelineExecutionArn": "arn", "arguments": {}, "status": "Executing"}
    queue.put("exec1", "Prep", QUEUE, first, [["rows", "Integer"]])
    queue.put("exec1", "Prep", QUEUE, {**first, "token": "BBBBBBBBBB"}, [["rows", "Integer"]])
    assert [r["token"] for r in queue.waiting()] == ["BBBBBBBBBB"]
    assert queue.get("AAAAAAAAAA")["status"] == "Stopped"
    queue.succeed("BBBBBBBBBB", {"rows": "7"})
    assert queue.get("BBBBBBBBBB")["output_parameters"] == {"rows": 7}
