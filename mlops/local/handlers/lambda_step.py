"""Lambda: the step's function, served by a local handler that config ``local.lambda_functions`` names.

``{"Type": "Lambda", "FunctionArn": ..., "Arguments": {the inputs}, "OutputParameters": [{OutputName,
OutputType}]}``: the mapped ``handler(event, context)`` runs in a subprocess under the Lambda runtime
contract (``event`` the resolved inputs, ``context`` a LambdaContext), so it cannot crash the executor and a
timeout kills it; its stdout/stderr are the step's log. Its return value must be a dict holding every
OutputParameter with its declared type; the step's properties are ``{"FunctionArn", "OutputParameters":
{name: value}}`` (``Steps.X.OutputParameters['name']``).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops.config import LambdaConfigError, check_functions  # noqa: F401  (re-exported)
from mlops.definition.expressions import resolve
from mlops.errors import MlopsError
from mlops.local.records import Outcome, StepStatus

CONFIG_KEY = "local.lambda_functions"
# The SDK's ``Lambda(timeout=120)`` default, which a step whose definition gives no Timeout gets.
DEFAULT_TIMEOUT_S = 120.0
MAX_TIMEOUT_S = 900.0  # Lambda's own ceiling
DEFAULT_MEMORY_MB = 128
OUTPUT_TYPES = ("String", "Integer", "Boolean", "Float")
_ARN = re.compile(
    r"^arn:aws[a-z-]*:lambda:[a-z0-9-]*:\d*:function:(?P<name>[^:]+)(?::(?P<qualifier>[^:]+))?$"
)


def resolve_paths(functions: Mapping[str, str], base: Path) -> dict[str, str]:
    """``functions`` with each relative ``file.py`` target made absolute against ``base``."""
    out = {}
    for key, target in functions.items():
        where, _, function = target.strip().rpartition(":")
        if where.endswith(".py") and not Path(where).is_absolute():
            where = str((base / where).resolve())
        out[key] = f"{where}:{function}"
    return out


def function_name(arn: str) -> str:
    m = _ARN.match(arn)
    return m.group("name") if m else arn.rsplit(":", 1)[-1] if arn.startswith("arn:") else arn


def target_for(arn: str, functions: Mapping[str, str]) -> str | None:
    """The handler mapped to ``arn``: the ARN itself, else the ARN without its qualifier, else its name."""
    if arn in functions:
        return functions[arn]
    m = _ARN.match(arn)
    if m and m.group("qualifier"):
        unqualified = arn.rsplit(":", 1)[0]
        if unqualified in functions:
            return functions[unqualified]
    name = function_name(arn)
    return functions.get(name)


def unmapped(arn: str) -> str:
    return f"no local handler for Lambda function {arn}: set config {CONFIG_KEY}: {{{arn!r}: 'package.module:function'}} (or mlops run --lambda-functions FILE.yaml)"


def step_timeout_s(spec: Mapping[str, Any], default: float) -> float:
    """The step's ``Timeout`` (seconds, or a duration such as ``PT10M`` / ``10m``), else ``default``."""
    raw = spec.get("Timeout")
    if raw is None:
        return default
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str):
        from mlops.local.caching import parse_duration

        try:
            seconds = float(raw) if re.fullmatch(r"\d+(\.\d+)?", raw.strip()) else None
            if seconds is None:
                seconds = parse_duration(raw).total_seconds()
        except MlopsError:
            raise MlopsError(f"Timeout {raw!r} is not a number of seconds or a duration") from None
    else:
        raise MlopsError(f"Timeout {raw!r} is not a number of seconds or a duration")
    if seconds <= 0:
        raise MlopsError(f"Timeout {raw!r} must be positive")
    return seconds


def typed_output(name: str, kind: str, value: Any, where: str) -> Any:
    """``value`` checked against the declared OutputType (an int is a Float; a bool is no number)."""
    ok = {
        "String": isinstance(value, str),
        "Integer": isinstance(value, int) and not isinstance(value, bool),
        "Boolean": isinstance(value, bool),
        "Float": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind)
    if ok is None:
        raise MlopsError(
            f"output {name}: unknown OutputType {kind!r} (expected one of {', '.join(OUTPUT_TYPES)})"
        )
    if not ok:
        raise MlopsError(f"output {name}: {where} {type(value).__name__} {str(value)[:80]!r}, not {kind}")
    return float(value) if kind == "Float" else value


def declared_outputs(spec: Mapping[str, Any]) -> list[tuple[str, str]]:
    outputs = spec.get("OutputParameters") or []
    if not isinstance(outputs, list):
        raise MlopsError("OutputParameters must be a list of {OutputName, OutputType}")
    found = []
    for o in outputs:
        if not isinstance(o, Mapping) or not isinstance(o.get("OutputName"), str):
            raise MlopsError(f"OutputParameters: {o!r} is not {{OutputName, OutputType}}")
        found.append((o["OutputName"], str(o.get("OutputType") or "String")))
    return found


# The child: imports the handler, calls it under the Lambda contract, writes {"result"} or {"errorType", ...}.
_RUNNER = r"""
import importlib, importlib.util, json, os, sys, time, traceback
spec = json.load(open(sys.argv[1]))
deadline = time.monotonic() + spec["timeout_s"]

class LambdaContext:
    def __init__(self, c):
        self.function_name = c["function_name"]
        self.function_version = c["function_version"]
        self.invoked_function_arn = c["invoked_function_arn"]
        self.memory_limit_in_mb = c["memory_limit_in_mb"]
        self.aws_request_id = c["aws_request_id"]
        self.log_group_name = c["log_group_name"]
        self.log_stream_name = c["log_stream_name"]
        self.identity = None
        self.client_context = None
    def get_remaining_time_in_millis(self):
        return max(0, int((deadline - time.monotonic()) * 1000))

def answer(doc):
    with open(spec["result"], "w") as f:
        json.dump(doc, f)

try:
    where, _, name = spec["target"].rpartition(":")
    if where.endswith(".py"):
        sys.path.insert(0, os.path.dirname(os.path.abspath(where)))
        mod_spec = importlib.util.spec_from_file_location(os.path.basename(where)[:-3], where)
        if mod_spec is None or not os.path.isfile(where):
            raise FileNotFoundError(f"no such handler file: {where}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[mod_spec.name] = module
        mod_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(where)
    function = getattr(module, name, None)
    if not callable(function):
        raise AttributeError(f"{where} has no function {name}")
    result = function(spec["event"], LambdaContext(spec["context"]))
    try:
        text = json.dumps({"result": result})
    except (TypeError, ValueError) as err:
        raise TypeError(f"the return value is not JSON-serializable: {err}") from None
    with open(spec["result"], "w") as f:
        f.write(text)
except BaseException as err:
    traceback.print_exc()
    sys.stderr.flush()
    answer({"errorType": type(err).__name__, "errorMessage": str(err)})
    sys.exit(1)
"""


class LambdaHandler:
    describe_settings = ("lambda_functions",)

    def describe(self, step, images, lambda_functions=None):
        from mlops.local.check import StepView

        arn = step.spec.get("FunctionArn")
        view = StepView(step.name, step.type)
        if not isinstance(arn, str):
            view.image = "(from an expression)"
            view.runtime = "decided at run time (FunctionArn is an expression)"
            return view
        view.image = arn
        target = target_for(arn, lambda_functions or {})
        if target is None:
            view.runtime = "(none)"
            view.blockers.append(unmapped(arn))
        else:
            view.runtime = f"local Lambda handler {target} (subprocess)"
        try:
            declared_outputs(step.spec)
            step_timeout_s(step.spec, DEFAULT_TIMEOUT_S)
        except MlopsError as err:
            view.blockers.append(str(err))
        return view

    def run(self, step, execution) -> Outcome:
        ctx = execution.context()
        arn = resolve(step.spec.get("FunctionArn"), ctx)
        if not isinstance(arn, str) or not arn:
            return Outcome.failed(f"FunctionArn {arn!r} is not a function ARN or name")
        functions = dict(getattr(execution.options, "lambda_functions", None) or {})
        target = target_for(arn, functions)
        if target is None:
            return Outcome.failed(unmapped(arn))
        outputs = declared_outputs(step.spec)
        timeout = min(step_timeout_s(step.spec, DEFAULT_TIMEOUT_S), MAX_TIMEOUT_S)
        event = resolve(step.arguments, ctx)
        attempt = int(execution.previous_attempts.get(step.name) or 0) + 1
        job_dir = execution.home.execution_dir(execution.execution_id) / step.name / f"attempt-{attempt}"
        job_dir.mkdir(parents=True, exist_ok=True)
        execution.save(step.name, attempts=attempt, job_dir=str(job_dir))
        log_path = job_dir / "lambda.log"
        fields = dict(log_paths=[str(log_path)], attempts=attempt, job_dir=str(job_dir))
        invoked = arn
        if not arn.startswith("arn:"):  # a function name: its ARN in the definition's region and account
            _, partition, _, region, account = execution.prefix.split(":")[:5]
            invoked = f"arn:{partition}:lambda:{region}:{account}:function:{arn}"
        result, reason, stopped = invoke(
            target, invoked, event, timeout, log_path=log_path, stop=execution.stop,
            env=aws_env(execution.services, log_path),
            on_line=lambda line: execution.emit("log", step.name, message=f"[lambda] {line}"),
            region=invoked.split(":")[3] if invoked.count(":") >= 4 else "",
        )  # fmt: skip
        base = {"FunctionArn": arn}
        if stopped:
            return Outcome(StepStatus.STOPPED, failure_reason="stopped", **fields)
        if reason is not None:
            return Outcome.failed(f"Lambda function {function_name(arn)} ({target}): {reason}", **fields)
        if not isinstance(result, dict):
            return Outcome.failed(
                f"Lambda function {function_name(arn)} returned {type(result).__name__}, not a dict "
                "(its OutputParameters are read from the returned dict)",
                **fields,
            )
        values = {}
        try:
            for name, kind in outputs:
                if name not in result:
                    raise MlopsError(
                        f"output {name}: not in the dict that the function returned (keys: "
                        f"{', '.join(sorted(map(str, result))) or 'none'})"
                    )
                values[name] = typed_output(name, kind, result[name], "the function returned")
        except MlopsError as err:
            return Outcome.failed(f"Lambda function {function_name(arn)}: {err}", **fields)
        return Outcome.succeeded({**base, "OutputParameters": values}, **fields)


def invoke(
    target: str,
    arn: str,
    event: Any,
    timeout: float,
    *,
    log_path: Path,
    stop: threading.Event | None = None,
    on_line=None,
    region: str = "",
    env: Mapping[str, str] | None = None,
) -> tuple[Any, str | None, bool]:
    """Call ``target`` as Lambda would, in a subprocess: ``(result, failure reason or None, stopped)``."""
    name = function_name(arn)
    if not arn.startswith("arn:"):  # a bare function name: the ARN in the definition's region and account
        from mlops.local.arns import PLACEHOLDER_ACCOUNT

        arn = f"arn:aws:lambda:{region or 'local'}:{PLACEHOLDER_ACCOUNT}:function:{name}"
    request_id = str(uuid.uuid4())
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    context = {
        "function_name": name,
        "function_version": "$LATEST",
        "invoked_function_arn": arn,
        "memory_limit_in_mb": DEFAULT_MEMORY_MB,
        "aws_request_id": request_id,
        "log_group_name": f"/aws/lambda/{name}",
        "log_stream_name": f"{day}/[$LATEST]{uuid.uuid4().hex}",
    }
    with tempfile.TemporaryDirectory(prefix="mlops-lambda-") as tmp:
        spec_file, result_file = Path(tmp) / "invoke.json", Path(tmp) / "result.json"
        try:
            spec_file.write_text(json.dumps({
                "target": target, "event": event, "context": context, "timeout_s": timeout,
                "result": str(result_file),
            }))  # fmt: skip
        except (TypeError, ValueError) as err:
            return None, f"the step's inputs are not JSON: {err}", False
        env = {**os.environ, **(env or {}), "AWS_LAMBDA_FUNCTION_NAME": name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(DEFAULT_MEMORY_MB), "PYTHONUNBUFFERED": "1"}  # fmt: skip
        if region:
            env.setdefault("AWS_REGION", region)
            env.setdefault("AWS_DEFAULT_REGION", region)
        with open(log_path, "ab") as log:
            log.write(f"START RequestId: {request_id} Version: $LATEST\n".encode())
            log.flush()
            started = time.monotonic()
            proc = subprocess.Popen(
                [sys.executable, "-c", _RUNNER, str(spec_file)], stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
            reader = threading.Thread(target=_pump, args=(proc.stdout, log, on_line), daemon=True)
            reader.start()
            timed_out = stopped = False
            while proc.poll() is None:
                if time.monotonic() - started > timeout:
                    timed_out = True
                elif stop is not None and stop.is_set():
                    stopped = True
                if timed_out or stopped:
                    _kill(proc)
                    break
                try:
                    proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
            proc.wait()
            reader.join(timeout=5)
            elapsed = time.monotonic() - started
            log.write(f"END RequestId: {request_id} Duration: {elapsed * 1000:.2f} ms\n".encode())
        if stopped:
            return None, "stopped", True
        if timed_out:
            return None, f"Task timed out after {timeout:g} seconds", False
        try:
            doc = json.loads(result_file.read_text())
        except (OSError, ValueError):
            return (
                None,
                f"the handler process ended with exit code {proc.returncode} and no result (see {log_path})",
                False,
            )
        if "errorType" in doc:
            return None, f"{doc['errorType']}: {doc.get('errorMessage', '')}", False
        return doc.get("result"), None, False


def aws_env(services, log_path: Path) -> dict[str, str]:
    """The run's local AWS stand-ins for the function's boto3 calls (as a job's), so none reaches AWS."""
    if services is None:
        return {}
    try:
        return dict(services.job_env("none"))
    except MlopsError as err:  # no S3 API (rclone): the gateway (moto) still answers, with a dummy key
        with open(log_path, "a") as log:
            log.write(f"(the local S3 API is not available: {err}; other AWS calls go to moto)\n")
        return {
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{services.tcp_port}",
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_DEFAULT_REGION": services.region,
            "AWS_REGION": services.region,
        }


def _pump(stream, log, on_line) -> None:
    for raw in iter(stream.readline, b""):
        log.write(raw)
        log.flush()
        if on_line is not None:
            try:
                on_line(raw.decode(errors="replace").rstrip("\n"))
            except Exception:
                pass
    stream.close()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
