"""``mlops models promote --target aws``: answer the promotion gate's callback through SageMaker's API.

SageMaker puts the Callback step's message (``{"token", "pipelineExecutionArn", "arguments", "status"}``)
on the gate's SQS queue. This reads the queue for the message whose arguments name the version's
``ModelPackageArn``, answers it with SendPipelineExecutionStepSuccess (the gate's output = who promoted) or
SendPipelineExecutionStepFailure, and deletes it. Messages of other versions are put back at once
(visibility 0). CloudTrail records the caller of the Send* call: that is the audit trail on AWS.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from mlops.aws.session import Aws, aws_call
from mlops.errors import MlopsError

RECEIVE_WAIT_S = 5  # long polling per ReceiveMessage; the whole search waits at most ``wait_s``
VISIBILITY_S = 60  # a message taken stays hidden this long unless put back or deleted
MAX_REASON = 256  # SendPipelineExecutionStepFailure's FailureReason limit


class PromotionNotWaiting(MlopsError):
    """No message of this version is on the promotion queue."""


def _queue(aws: Aws, url: str) -> str:
    """The queue's URL as this endpoint serves it (GetQueueUrl by name and owner account)."""
    parts = url.rstrip("/").split("/")
    if len(parts) < 5 or not parts[-2].isdigit():
        raise MlopsError(
            f"promotion queue URL {url!r}: expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
        )
    with aws_call("sqs:GetQueueUrl", parts[-1]):
        return aws.client("sqs").get_queue_url(QueueName=parts[-1], QueueOwnerAWSAccountId=parts[-2])[
            "QueueUrl"
        ]


def _body(message: dict[str, Any]) -> dict[str, Any]:
    try:
        body = json.loads(message.get("Body") or "")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def find_message(aws: Aws, queue: str, package_arn: str, wait_s: float) -> tuple[dict, dict] | None:
    """Take the Executing message of ``package_arn`` off ``queue``; the others go back at once."""
    sqs = aws.client("sqs")
    deadline = time.monotonic() + wait_s
    others: list[dict[str, Any]] = []
    try:
        while True:
            wait = max(0, min(RECEIVE_WAIT_S, int(deadline - time.monotonic())))
            with aws_call("sqs:ReceiveMessage", queue):
                messages = sqs.receive_message(
                    QueueUrl=queue,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=wait,
                    VisibilityTimeout=VISIBILITY_S,
                ).get("Messages", [])
            for message in messages:
                body = _body(message)
                arguments = body.get("arguments") if isinstance(body.get("arguments"), dict) else {}
                if arguments.get("ModelPackageArn") == package_arn and body.get("status") == "Executing":
                    return message, body
                others.append(message)
            if time.monotonic() >= deadline:
                return None
    finally:
        for message in others:
            with aws_call("sqs:ChangeMessageVisibility", queue):
                sqs.change_message_visibility(
                    QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )


def promote(
    aws: Aws, gate, cfg, package_arn: str, *, actor: str, reason: str, reject: bool = False,
    wait_s: float = 20.0,
) -> str:  # fmt: skip
    """Answer the gate (a ``mlops.project.PromotionGate``) for ``package_arn``; returns the pipeline
    execution ARN that goes on (or fails)."""
    queue = _queue(aws, gate.queue_url(cfg))
    found = find_message(aws, queue, package_arn, wait_s)
    if found is None:
        raise PromotionNotWaiting(
            f"no promotion message for {package_arn} on {queue} within {wait_s:g}s "
            "(is its model-deploy execution at the gate? aws sagemaker list-pipeline-executions)"
        )
    message, body = found
    token, execution = body.get("token"), body.get("pipelineExecutionArn", "")
    request = {"CallbackToken": token, "ClientRequestToken": str(uuid.uuid4())}
    if reject:
        with aws_call("sagemaker:SendPipelineExecutionStepFailure", execution):
            aws.sagemaker.send_pipeline_execution_step_failure(
                **request, FailureReason=f"promotion rejected by {actor}: {reason}"[:MAX_REASON]
            )
    else:
        with aws_call("sagemaker:SendPipelineExecutionStepSuccess", execution):
            aws.sagemaker.send_pipeline_execution_step_success(
                **request, OutputParameters=[{"Name": gate.output, "Value": actor}]
            )
    with aws_call("sqs:DeleteMessage", queue):
        aws.client("sqs").delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    return execution
