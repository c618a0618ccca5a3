"""Register: a model version in the model package group, PendingManualApproval, with its metrics."""

from __future__ import annotations

from steps.context import StepContext
from steps.evaluate.step import report_uri

NAME = "RegisterModel"


def build(ctx: StepContext, train, evaluate):
    from sagemaker.core.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.mlops.workflow.model_step import ModelStep
    from sagemaker.serve.model_builder import ModelBuilder

    reg = ctx.cfg.registry
    builder = ModelBuilder(
        image_uri=ctx.image_uri(reg.inference_image, reg.inference_instance_types[0], "inference"),
        s3_model_data_url=train.properties.ModelArtifacts.S3ModelArtifacts,
        sagemaker_session=ctx.session,
        role_arn=ctx.role,
        env_vars={"SAGEMAKER_PROGRAM": "inference.py"},
    )
    metrics = ModelMetrics(
        model_statistics=MetricsSource(s3_uri=report_uri(evaluate), content_type="application/json")
    )
    args = builder.register(
        content_types=list(reg.content_types),
        response_types=list(reg.response_types),
        inference_instances=list(reg.inference_instance_types),
        model_package_group_name=reg.model_package_group,
        approval_status=ctx.parameters["ModelApprovalStatus"],
        model_metrics=metrics,
        description=f"{ctx.cfg.project.description} (env {ctx.cfg.env})",
    )
    return ModelStep(name=NAME, step_args=args, retry_policies=ctx.retry_policies(job=False))
