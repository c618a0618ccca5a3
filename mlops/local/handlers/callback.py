"""Callback: the step puts SageMaker's callback message on a local queue and waits for its token.

``{"Type": "Callback", "SqsQueueUrl": ..., "Arguments": {the inputs}, "OutputParameters": [...]}``: the
message ``{"token", "pipelineExecutionArn", "arguments", "status": "Executing"}`` goes into the home's
SQLite (table ``callbacks``, standing in for the SQS queue); ``mlops callback list`` shows what waits and
``mlops callback succeed TOKEN --output K=V`` / ``fail TOKEN --reason R`` complete it, as
SendPipelineExecutionStepSuccess / Failure do. The step waits for the step's ``Timeout``, else config
``local.callback_timeout_s``, then fails; stopping the execution stops it (the message turns
``Stopping``, as the one SageMaker sends on StopPipelineExecution).
"""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from mlops.definition.expressions import resolve
from mlops.errors import MlopsError
from mlops.local.handlers.lambda_step import OUTPUT_TYPES, declared_outputs, step_timeout_s
from mlops.local.records import Outcome, StepStatus
from mlops.local.state.home import Home, now

DEFAULT_TIMEOUT_S = 86400.0  # config local.callback_timeout_s's default
POLL_S = 0.25
MAX_REASON = 256  # SendPipelineExecutionStepFailure's FailureReason limit
WAITING, SUCCEEDED, FAILED, STOPPED, TIMED_OUT = "Waiting", "Succeeded", "Failed", "Stopped", "TimedOut"

SCHEMA = """
CREATE TABLE IF NOT EXISTS callbacks (
    token TEXT PRIMARY KEY,
    execution_id TEXT NOT NULL,
    step TEXT NOT NULL,
    queue_url TEXT NOT NULL,
    message TEXT NOT NULL,
    outputs TEXT NOT NULL,
    status TEXT NOT NULL,
    output_parameters TEXT,
    failure_reason TEXT,
    created_at TEXT NOT NULL,
    completed_at TEXT
);
CREATE INDEX IF NOT EXISTS callbacks_status ON callbacks (status);
"""


class CallbackError(MlopsError):
    """A token that cannot be completed (unknown, already completed, outputs that do not fit)."""


def _token() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(10))  # SageMaker's tokens: 10 alphanumerics


def convert_output(name: str, kind: str, text: str) -> Any:
    """A ``--output K=V`` value as its declared OutputType."""
    try:
        if kind == "String":
            return text
        if kind == "Integer":
            return int(text.strip())
        if kind == "Float":
            return float(text.strip())
        if kind == "Boolean":
            low = text.strip().lower()
            if low in ("true", "false"):
                return low == "true"
            raise ValueError(text)
    except ValueError:
        raise CallbackError(f"output {name}: {text!r} is not {kind}") from None
    raise CallbackError(
        f"output {name}: unknown OutputType {kind!r} (expected one of {', '.join(OUTPUT_TYPES)})"
    )


class Callbacks:
    """The local queue of callback messages and their tokens, in the home's SQLite."""

    def __init__(self, home: Home):
        self.home = home
        with home.db() as con:
            for statement in filter(str.strip, SCHEMA.split(";")):
                con.execute(statement)

    def put(self, execution_id: str, step: str, queue_url: str, message: dict[str, Any], outputs) -> None:
        with self.home.db() as con:
            # a resumed execution asks again: the token of the run that died waits no more
            con.execute(
                "UPDATE callbacks SET status = ?, failure_reason = ?, completed_at = ?"
                " WHERE execution_id = ? AND step = ? AND status = ?",
                (STOPPED, "superseded by a resumed run of the execution", now(), execution_id, step, WAITING),
            )
            con.execute(
                "INSERT INTO callbacks (token, execution_id, step, queue_url, message, outputs, status,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (message["token"], execution_id, step, queue_url, json.dumps(message), json.dumps(outputs),
                 WAITING, now()),
            )  # fmt: skip

    def get(self, token: str) -> dict[str, Any] | None:
        with self.home.db(immediate=False) as con:
            row = con.execute("SELECT * FROM callbacks WHERE token = ?", (token,)).fetchone()
        return _row(row)

    def waiting(self) -> list[dict[str, Any]]:
        """Tokens still waiting whose execution is still Executing (a killed executor's are not)."""
        with self.home.db(immediate=False) as con:
            rows = con.execute(
                "SELECT c.* FROM callbacks c JOIN executions e ON e.id = c.execution_id"
                " WHERE c.status = ? AND e.status = 'Executing' ORDER BY c.created_at",
                (WAITING,),
            ).fetchall()
        return [_row(r) for r in rows]

    def complete(
        self, token: str, status: str, *, outputs: dict[str, Any] | None = None, reason: str | None = None
    ) -> bool:
        """Move a Waiting token to ``status``; False when it was no longer waiting."""
        with self.home.db() as con:
            cur = con.execute(
                "UPDATE callbacks SET status = ?, output_parameters = ?, failure_reason = ?, completed_at = ?"
                " WHERE token = ? AND status = ?",
                (status, None if outputs is None else json.dumps(outputs), reason, now(), token, WAITING),
            )
            if status == STOPPED and cur.rowcount:
                row = con.execute("SELECT message FROM callbacks WHERE token = ?", (token,)).fetchone()
                message = {**json.loads(row["message"]), "status": "Stopping"}
                con.execute("UPDATE callbacks SET message = ? WHERE token = ?", (json.dumps(message), token))
            return cur.rowcount == 1

    def succeed(self, token: str, assignments: Mapping[str, str]) -> dict[str, Any]:
        """SendPipelineExecutionStepSuccess: the outputs, typed as the step declares them."""
        row = self._open(token)
        declared = dict(row["outputs"])
        unknown = sorted(set(assignments) - set(declared))
        if unknown:
            raise CallbackError(
                f"token {token}: step {row['step']} declares no output {', '.join(unknown)} "
                f"(declared: {', '.join(declared) or 'none'})"
            )
        missing = [n for n in declared if n not in assignments]
        if missing:
            raise CallbackError(f"token {token}: step {row['step']} needs --output for {', '.join(missing)}")
        values = {n: convert_output(n, declared[n], assignments[n]) for n in declared}
        if not self.complete(token, SUCCEEDED, outputs=values):
            raise CallbackError(f"callback token {token} was completed meanwhile")
        return row

    def fail(self, token: str, reason: str) -> dict[str, Any]:
        """SendPipelineExecutionStepFailure."""
        row = self._open(token)
        if not self.complete(token, FAILED, reason=reason[:MAX_REASON]):
            raise CallbackError(f"callback token {token} was completed meanwhile")
        return row

    def _open(self, token: str) -> dict[str, Any]:
        row = self.get(token)
        if row is None:
            raise CallbackError(f"unknown callback token {token!r} in {self.home.root}")
        if row["status"] != WAITING:
            raise CallbackError(f"callback token {token} is already completed ({row['status']})")
        execution = self.home.runs.get(row["execution_id"])
        if execution is None or execution["status"] != "Executing":
            state = execution["status"] if execution else "gone"
            raise CallbackError(
                f"callback token {token}: execution {row['execution_id']} is {state}; nothing waits on it"
            )
        return row


def _row(row) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row)
    out["message"] = json.loads(out["message"])
    out["outputs"] = json.loads(out["outputs"])
    if out.get("output_parameters"):
        out["output_parameters"] = json.loads(out["output_parameters"])
    return out


def age(created_at: str) -> str:
    seconds = int((datetime.now(UTC) - datetime.fromisoformat(created_at)).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class CallbackHandler:
    def describe(self, step, images):
        from mlops.local.check import StepView

        queue = step.spec.get("SqsQueueUrl")
        view = StepView(step.name, step.type, image=queue if isinstance(queue, str) else "")
        view.runtime = "local callback queue (mlops callback list | succeed | fail)"
        try:
            declared_outputs(step.spec)
            step_timeout_s(step.spec, DEFAULT_TIMEOUT_S)
        except MlopsError as err:
            view.blockers.append(str(err))
        return view

    def run(self, step, execution) -> Outcome:
        ctx = execution.context()
        queue = resolve(step.spec.get("SqsQueueUrl", ""), ctx)
        outputs = declared_outputs(step.spec)
        default = float(getattr(execution.options, "callback_timeout_s", None) or DEFAULT_TIMEOUT_S)
        timeout = step_timeout_s(step.spec, default)
        arguments = resolve(step.arguments, ctx)
        token = _token()
        message = {
            "token": token,
            "pipelineExecutionArn": ctx.execution["PipelineExecutionArn"],
            "arguments": arguments,
            "status": "Executing",
        }
        queue_store = Callbacks(execution.home)
        queue_store.put(execution.execution_id, step.name, str(queue), message, outputs)
        attempt = int(execution.previous_attempts.get(step.name) or 0) + 1
        execution.save(step.name, attempts=attempt)
        names = " ".join(f"--output {n}=..." for n, _ in outputs)
        execution.emit(
            "log", step.name,
            message=f"[callback] waiting on token {token} (queue {queue}): "
            f"mlops callback succeed {token}{' ' + names if names else ''} | mlops callback fail {token} --reason R",
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            row = queue_store.get(token)
            if row["status"] == SUCCEEDED:
                values = row["output_parameters"] or {}
                return Outcome.succeeded(
                    {"OutputParameters": values, "CallbackToken": token}, attempts=attempt
                )
            if row["status"] == FAILED:
                return Outcome.failed(row["failure_reason"] or "callback failed", attempts=attempt)
            if execution.stop.is_set():
                if queue_store.complete(token, STOPPED, reason="stopped"):
                    return Outcome(StepStatus.STOPPED, failure_reason="stopped", attempts=attempt)
                continue  # completed meanwhile: take that answer
            if time.monotonic() >= deadline:
                if queue_store.complete(token, TIMED_OUT, reason="timed out"):
                    return Outcome.failed(
                        f"callback token {token} not completed within {timeout:g} s (the step's Timeout, else "
                        "config local.callback_timeout_s)",
                        attempts=attempt,
                    )
                continue
            execution.stop.wait(min(POLL_S, max(0.0, deadline - time.monotonic())))
