"""Processing steps that put the rollback alarms in place and configure autoscaling for an endpoint."""

from __future__ import annotations

from steps.context import StepContext, code_input
from steps.endpoint.step import endpoint_name


def _step(ctx: StepContext, name: str, arguments: list[str], description: str, depends_on=None):
    from sagemaker.mlops.workflow.steps import ProcessingStep

    settings = ctx.cfg.steps.evaluate  # a small CPU job: reuse the evaluation job's sizing
    processor = ctx.processor(settings, settings.image, "endpoint_ops.py", "endpoint-ops")
    args = processor.run(inputs=[code_input(ctx.code_bundle("endpoint_ops"))], arguments=arguments)
    return ProcessingStep(name=name, step_args=args, description=description, depends_on=depends_on,
                          retry_policies=ctx.retry_policies())  # fmt: skip


def build_alarms(ctx: StepContext, stage: str):
    alarms = ctx.cfg.endpoints.production.rollback_alarms if stage == "production" else None
    if alarms is None:
        return None
    return _step(
        ctx,
        f"{stage.capitalize()}Alarms",
        ["alarms", "--endpoint", endpoint_name(ctx, stage), "--max-5xx-rate", str(alarms.max_5xx_rate),
         "--max-latency-ms", str(alarms.max_model_latency_ms), "--periods", str(alarms.evaluation_periods)],
        f"CloudWatch alarms that roll the {stage} endpoint back (5xx rate, model latency)",
    )  # fmt: skip


def build_autoscaling(ctx: StepContext, stage: str, endpoint_step):
    scaling = getattr(ctx.cfg.endpoints, stage).autoscaling
    if scaling is None:
        return None
    return _step(
        ctx,
        f"{stage.capitalize()}Autoscaling",
        ["autoscaling", "--endpoint", endpoint_name(ctx, stage), "--min", str(scaling.min_capacity),
         "--max", str(scaling.max_capacity), "--target", str(scaling.target_invocations_per_instance)],
        f"target-tracking autoscaling of the {stage} endpoint",
        depends_on=[endpoint_step],
    )  # fmt: skip
