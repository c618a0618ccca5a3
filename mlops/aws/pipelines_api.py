"""Pipelines on SageMaker: upload bundles, create-or-update, start, status, wait, and a readable diff.

Every function takes an :class:`~mlops.aws.session.Aws` (clients for one region) and plain values
(definition JSON text, pipeline names, bundles), so the CLI and CI share one code path.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import ClientError

from mlops import s3uri
from mlops.aws.session import Aws, AwsCredentialsError, AwsError, AwsNotFound, aws_call
from mlops.definition.diff import definition_diff
from mlops.definition.parameters import convert, declared
from mlops.errors import ParameterError

log = logging.getLogger(__name__)

TERMINAL = {"Succeeded", "Failed", "Stopped"}
DESCRIPTION_LIMIT = 3072  # PipelineDescription max length in the SageMaker API


class BundleLike(Protocol):
    name: str
    sha256: str
    s3_uri: str
    source: Path
    files: tuple[str, ...]


# ------------------------------------------------------------------------------------------- requests


def pipeline_description(cfg, commit: str) -> str:
    text = f"{cfg.project.description} (git {commit})" if cfg.project.description else f"git {commit}"
    return text[:DESCRIPTION_LIMIT]


def aws_tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def create_pipeline_request(cfg, name: str, definition: str, commit: str) -> dict[str, Any]:
    request = {
        "PipelineName": name,
        "PipelineDefinition": definition,
        "PipelineDescription": pipeline_description(cfg, commit),
        "RoleArn": cfg.aws.role_arn,
        "ParallelismConfiguration": {"MaxParallelExecutionSteps": cfg.local.max_parallel_steps},
        # A fresh token per call: botocore's retries of this one request reuse it, nothing else does.
        "ClientRequestToken": uuid.uuid4().hex,
    }
    if cfg.aws.tags:
        request["Tags"] = aws_tags(cfg.aws.tags)
    return request


def update_pipeline_request(cfg, name: str, definition: str, commit: str) -> dict[str, Any]:
    # UpdatePipeline takes no Tags and no ClientRequestToken; tags are set with AddTags.
    request = create_pipeline_request(cfg, name, definition, commit)
    request.pop("Tags", None)
    request.pop("ClientRequestToken")
    return request


def put_object_request(cfg, bucket: str, key: str, body: bytes) -> dict[str, Any]:
    request: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": body}
    if cfg.aws.kms_key_id:
        request["ServerSideEncryption"] = "aws:kms"
        request["SSEKMSKeyId"] = cfg.aws.kms_key_id
    return request


# --------------------------------------------------------------------------------------------- upsert


@dataclass
class UpsertResult:
    key: str  # "model-build"
    name: str  # SageMaker pipeline name
    action: str  # "created" | "updated" | "unchanged"
    arn: str


@dataclass
class UploadResult:
    uploaded: list[str] = field(default_factory=list)  # s3 URIs written
    present: int = 0  # files already there


def upload_bundles(
    aws: Aws, cfg, bundles: Iterable[BundleLike], on_file: Callable[[str], None] | None = None
) -> UploadResult:
    """Upload each bundle's files that are not in S3 yet; the prefix is content-addressed, so present = equal."""
    result = UploadResult()
    for bundle in bundles:
        try:
            bucket, prefix = s3uri.split(bundle.s3_uri)
        except s3uri.S3UriError as err:
            raise AwsError(str(err)) from None
        existing = _keys_under(aws, bucket, prefix)
        for rel in bundle.files:
            key = prefix + rel
            if key in existing:
                result.present += 1
                continue
            body = (Path(bundle.source) / rel).read_bytes()
            with aws_call("s3:PutObject", f"s3://{bucket}/{key}"):
                aws.s3.put_object(**put_object_request(cfg, bucket, key, body))
            result.uploaded.append(f"s3://{bucket}/{key}")
            if on_file:
                on_file(f"s3://{bucket}/{key}")
    return result


def _keys_under(aws: Aws, bucket: str, prefix: str) -> set[str]:
    keys: set[str] = set()
    with aws_call("s3:ListBucket", f"s3://{bucket}/{prefix}"):
        for page in aws.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.update(obj["Key"] for obj in page.get("Contents", []))
    return keys


def describe_pipeline(aws: Aws, name: str) -> dict[str, Any] | None:
    """DescribePipeline, or None when the pipeline does not exist."""
    try:
        with aws_call("sagemaker:DescribePipeline", f"pipeline {name}"):
            return aws.sagemaker.describe_pipeline(PipelineName=name)
    except AwsNotFound:
        return None


def check_role(aws: Aws, role_arn: str) -> None:
    """Fail with one line when the execution role does not exist; skip quietly if we may not look."""
    role_name = role_arn.rsplit("/", 1)[-1]
    try:
        with aws_call("iam:GetRole", f"role {role_name}"):
            aws.client("iam").get_role(RoleName=role_name)
    except AwsNotFound:
        raise AwsNotFound(
            f"aws.role_arn: role {role_name} does not exist in this account (run `mlops bootstrap` first)"
        ) from None
    except AwsCredentialsError:
        raise
    except AwsError as exc:  # e.g. no iam:GetRole permission: CreatePipeline checks the role itself
        log.debug("cannot check role %s (%s); CreatePipeline will", role_name, exc)


def _same_deployment(deployed: dict[str, Any], request: dict[str, Any]) -> bool:
    # The description carries the commit; a new commit with an identical definition is not a change.
    return (
        _json_or_none(deployed.get("PipelineDefinition")) == json.loads(request["PipelineDefinition"])
        and deployed.get("RoleArn") == request["RoleArn"]
        and (deployed.get("ParallelismConfiguration") or None) == request["ParallelismConfiguration"]
    )


def _json_or_none(text: str | None):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def upsert(
    aws: Aws,
    cfg,
    definitions: dict[str, str],
    pipeline_names: dict[str, str],
    bundles: Iterable[BundleLike] = (),
    on_progress: Callable[[str], None] | None = None,
    *,
    commit: str,
) -> tuple[UploadResult, list[UpsertResult]]:
    """Upload missing bundles, then create or update each pipeline; unchanged ones are left alone.

    ``commit`` (the project's git commit, ``mlops.aws.session.git_commit``) goes into each description.
    """
    say = on_progress or (lambda msg: log.info(msg))
    check_role(aws, cfg.aws.role_arn)
    uploads = upload_bundles(aws, cfg, bundles, on_file=lambda uri: say(f"uploaded {uri}"))
    results = []
    for key in sorted(definitions):
        name = pipeline_names[key]
        deployed = describe_pipeline(aws, name)
        if deployed is None:
            request = create_pipeline_request(cfg, name, definitions[key], commit)
            with aws_call("sagemaker:CreatePipeline", f"pipeline {name}"):
                arn = aws.sagemaker.create_pipeline(**request)["PipelineArn"]
            action = "created"
        else:
            request = update_pipeline_request(cfg, name, definitions[key], commit)
            arn = deployed["PipelineArn"]
            if _same_deployment(deployed, request):
                action = "unchanged"
            else:
                with aws_call("sagemaker:UpdatePipeline", f"pipeline {name}"):
                    aws.sagemaker.update_pipeline(**request)
                if cfg.aws.tags:
                    with aws_call("sagemaker:AddTags", arn):
                        aws.sagemaker.add_tags(ResourceArn=arn, Tags=aws_tags(cfg.aws.tags))
                action = "updated"
        say(f"{name}: {'up to date' if action == 'unchanged' else action}")
        results.append(UpsertResult(key, name, action, arn))
    return uploads, results


# ---------------------------------------------------------------------------------------------- start


def start_request(name: str, params: dict[str, str], definition: str, display_name: str | None = None):
    known = declared(json.loads(definition) if isinstance(definition, str) else definition)
    values = []
    for key, value in params.items():
        if key not in known:
            listed = ", ".join(sorted(known)) or "none"
            raise ParameterError(f"--param {key}: pipeline {name} has no such parameter (known: {listed})")
        kind = known[key].get("Type", "String")
        try:
            typed = convert(key, kind, value)
        except ParameterError:
            raise ParameterError(f"--param {key}={value}: not a valid {kind}") from None
        values.append({"Name": key, "Value": str(typed).lower() if isinstance(typed, bool) else str(value)})
    request: dict[str, Any] = {"PipelineName": name, "ClientRequestToken": uuid.uuid4().hex}
    if values:
        request["PipelineParameters"] = values
    if display_name:
        request["PipelineExecutionDisplayName"] = display_name[:82]
    return request


def start(aws: Aws, name: str, params: dict[str, str] | None = None, display_name: str | None = None) -> str:
    """StartPipelineExecution with parameters checked against the deployed definition; returns the ARN."""
    deployed = describe_pipeline(aws, name)
    if deployed is None:
        raise AwsNotFound(f"not found: pipeline {name} in {aws.region} (run `mlops upsert` first)")
    request = start_request(name, params or {}, deployed["PipelineDefinition"], display_name)
    with aws_call("sagemaker:StartPipelineExecution", f"pipeline {name}"):
        return aws.sagemaker.start_pipeline_execution(**request)["PipelineExecutionArn"]


# ------------------------------------------------------------------------------------- status / wait


@dataclass
class StepRow:
    name: str
    status: str
    started: datetime | None = None
    ended: datetime | None = None
    reason: str = ""
    kind: str = ""


@dataclass
class ExecutionState:
    arn: str
    status: str
    pipeline: str
    started: datetime | None = None
    ended: datetime | None = None
    failure_reason: str = ""
    steps: list[StepRow] | None = None  # None: the endpoint cannot list steps (moto)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "Succeeded" else 1

    def as_dict(self) -> dict[str, Any]:
        def iso(t):
            return t.isoformat() if t else None

        return {
            "arn": self.arn,
            "pipeline": self.pipeline,
            "status": self.status,
            "started": iso(self.started),
            "ended": iso(self.ended),
            "failure_reason": self.failure_reason,
            "steps": None
            if self.steps is None
            else [
                {
                    "name": s.name,
                    "type": s.kind,
                    "status": s.status,
                    "started": iso(s.started),
                    "ended": iso(s.ended),
                    "reason": s.reason,
                }
                for s in self.steps
            ],
        }


def _step_kind(step: dict[str, Any]) -> str:
    meta = step.get("Metadata") or {}
    return next(iter(meta), "") if isinstance(meta, dict) else ""


class ExecutionWatcher:
    """Reads an execution's state; remembers when the endpoint has no ListPipelineExecutionSteps."""

    def __init__(self, aws: Aws):
        self.aws = aws
        self.steps_supported = True

    def state(self, arn: str) -> ExecutionState:
        with aws_call("sagemaker:DescribePipelineExecution", arn):
            desc = self.aws.sagemaker.describe_pipeline_execution(PipelineExecutionArn=arn)
        state = ExecutionState(
            arn=arn,
            status=desc.get("PipelineExecutionStatus", "Unknown"),
            pipeline=desc.get("PipelineArn", "").rsplit("/", 1)[-1],
            started=desc.get("CreationTime"),
            ended=desc.get("LastModifiedTime") if desc.get("PipelineExecutionStatus") in TERMINAL else None,
            failure_reason=desc.get("FailureReason", ""),
        )
        state.steps = self._steps(arn)
        return state

    def _steps(self, arn: str) -> list[StepRow] | None:
        if not self.steps_supported:
            return None
        rows = []
        with aws_call("sagemaker:ListPipelineExecutionSteps", arn):
            try:
                paginator = self.aws.sagemaker.get_paginator("list_pipeline_execution_steps")
                for page in paginator.paginate(PipelineExecutionArn=arn, SortOrder="Ascending"):
                    for step in page.get("PipelineExecutionSteps", []):
                        rows.append(
                            StepRow(
                                name=step.get("StepDisplayName") or step["StepName"],
                                status=step.get("StepStatus", "Unknown"),
                                started=step.get("StartTime"),
                                ended=step.get("EndTime"),
                                reason=step.get("FailureReason", ""),
                                kind=_step_kind(step),
                            )
                        )
            except ClientError as exc:
                if not _unsupported(exc):
                    raise
                log.info("the endpoint has no ListPipelineExecutionSteps; showing the execution status only")
                self.steps_supported = False
                return None
        return rows


def _unsupported(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return (
        code in {"NotImplemented", "UnknownOperationException", "InvalidAction", "500", "501"}
        or status == 501
    )


def status(aws: Aws, arn: str) -> ExecutionState:
    return ExecutionWatcher(aws).state(arn)


def wait(
    aws: Aws,
    arn: str,
    on_update: Callable[[ExecutionState], None] | None = None,
    *,
    first_delay_s: float = 5.0,
    max_delay_s: float = 60.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ExecutionState:
    """Poll with exponential backoff until the execution ends; ``on_update`` sees every state read."""
    watcher = ExecutionWatcher(aws)
    delay = first_delay_s
    begun = time.monotonic()
    while True:
        state = watcher.state(arn)
        if on_update:
            on_update(state)
        if state.done:
            return state
        if timeout_s is not None and time.monotonic() - begun + delay > timeout_s:
            raise AwsError(f"{arn}: still {state.status} after {timeout_s:g} s (wait again to keep watching)")
        sleep(delay)
        delay = min(delay * 2, max_delay_s)


# ----------------------------------------------------------------------------------------------- diff


@dataclass
class PipelineDiff:
    key: str
    name: str
    lines: list[str]

    @property
    def changed(self) -> bool:
        return bool(self.lines)


def diff(aws: Aws, definitions: dict[str, str], pipeline_names: dict[str, str]) -> list[PipelineDiff]:
    out = []
    for key in sorted(definitions):
        name = pipeline_names[key]
        deployed = describe_pipeline(aws, name)
        text = deployed.get("PipelineDefinition") if deployed else None
        out.append(PipelineDiff(key, name, definition_diff(text, definitions[key])))
    return out
