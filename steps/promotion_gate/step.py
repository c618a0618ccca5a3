"""The promotion gate: model-deploy waits between staging and production for a person (a Callback step).

SageMaker puts the callback message (its token and these inputs) on the environment's promotion queue;
``mlops models promote VERSION --reason R`` (or ``--reject``) finds the message of that version and answers
it with SendPipelineExecutionStepSuccess / Failure; locally it answers the local callback queue. Production's
steps run only after it, so a rejection leaves staging serving and production unchanged.
"""

from __future__ import annotations

from mlops.project import PromotionGate
from steps.context import StepContext
from steps.endpoint.step import endpoint_name

NAME = "ApproveProduction"
OUTPUT = "PromotedBy"  # who promoted: the callback's one output


def queue_name(cfg) -> str:
    """The SQS queue infra/mlops.yaml creates per environment (PromotionQueue)."""
    return f"{cfg.project.name}-{cfg.env}-promotion"


def queue_url(cfg) -> str:
    account = cfg.aws.role_arn.split(":")[4]  # the role's account: the queue lives beside the pipelines
    return f"https://sqs.{cfg.aws.region}.amazonaws.com/{account}/{queue_name(cfg)}"


def declaration() -> PromotionGate:
    """What the toolkit's ``mlops models promote`` needs to find and answer the gate."""
    return PromotionGate(step=NAME, output=OUTPUT, queue_url=queue_url)


def build(ctx: StepContext, package_arn, smoke_step):
    """The Callback step, or None where config switches the gate off for the environment."""
    if not ctx.cfg.endpoints.promotion_gate.enabled:
        return None
    from sagemaker.mlops.workflow.callback_step import CallbackOutput, CallbackOutputTypeEnum, CallbackStep

    return CallbackStep(
        name=NAME,
        sqs_queue_url=queue_url(ctx.cfg),
        inputs={
            "ModelPackageArn": package_arn,
            "StagingEndpoint": endpoint_name(ctx, "staging"),
            "ProductionEndpoint": endpoint_name(ctx, "production"),
        },
        outputs=[CallbackOutput(output_name=OUTPUT, output_type=CallbackOutputTypeEnum.String)],
        description="A person promotes the version serving on staging: mlops models promote VERSION",
        depends_on=[smoke_step],
    )
