"""Model from the approved package -> endpoint config (variant, data capture, KMS) -> endpoint.

The SDK's own ModelStep / EndpointConfigStep / EndpointStep, with their requests captured by the offline
PipelineSession. Names that must be unique per deployment carry the pipeline execution id.
"""

from __future__ import annotations

import types

from steps.config import Endpoint
from steps.context import StepContext

MODEL = "CreateModel"
MULTI_MODEL = "CreateMultiModel"


def endpoint_name(ctx: StepContext, stage: str) -> str:
    return f"{ctx.cfg.project.name}-{stage}"


def build_model(ctx: StepContext, package_arn):
    from sagemaker.mlops.workflow.model_step import ModelStep

    session = ctx.session
    # ModelStep takes the request the session captures from create_model inside a model-step context.
    session.init_model_step_arguments(types.SimpleNamespace(sagemaker_session=session))
    net = ctx.cfg.aws.network
    session.create_model(
        name=f"{ctx.cfg.project.name}-model",
        role=ctx.role,
        container_defs={"ModelPackageName": package_arn},
        vpc_config={"Subnets": list(net.subnets), "SecurityGroupIds": list(net.security_group_ids)}
        if net.subnets
        else None,
        tags=ctx.tags() or None,
    )
    return ModelStep(
        name=MODEL,
        step_args=session.context,
        description="SageMaker model from the approved model package",
        retry_policies=ctx.retry_policies(job=False),
    )


def build_multi_model(ctx: StepContext, model_data_prefix: str, depends_on=None):
    """A model whose container serves every archive under ``model_data_prefix`` (``Mode: MultiModel``).

    The registry's inference image and serving program, as the package's own container has them; SageMaker
    takes no ModelPackageName in MultiModel mode, so the version's artifact is copied under the prefix."""
    from sagemaker.mlops.workflow.model_step import ModelStep

    reg = ctx.cfg.registry
    session = ctx.session
    session.init_model_step_arguments(types.SimpleNamespace(sagemaker_session=session))
    net = ctx.cfg.aws.network
    session.create_model(
        name=f"{ctx.cfg.project.name}-multi-model",
        role=ctx.role,
        container_defs={
            "Image": ctx.image_uri(reg.inference_image, reg.inference_instance_types[0], "inference"),
            "Mode": "MultiModel",
            "ModelDataUrl": model_data_prefix,
            "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
        },
        vpc_config={"Subnets": list(net.subnets), "SecurityGroupIds": list(net.security_group_ids)}
        if net.subnets
        else None,
        tags=ctx.tags() or None,
    )
    return ModelStep(
        name=MULTI_MODEL,
        step_args=session.context,
        description="SageMaker multi-model model: the archives under the multi-model prefix",
        depends_on=depends_on,
        retry_policies=ctx.retry_policies(job=False),
    )


def build_endpoint_config(ctx: StepContext, stage: str, settings: Endpoint, model_step):
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.endpoint_step import EndpointConfigStep

    capture = None
    if settings.data_capture_percent:
        capture = {
            "EnableCapture": True,
            "InitialSamplingPercentage": settings.data_capture_percent,
            "DestinationS3Uri": f"{ctx.cfg.aws.s3_root}/data-capture/{stage}",
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
            **({"KmsKeyId": ctx.kms_key} if ctx.kms_key else {}),
        }
    asynchronous = None
    if settings.asynchronous is not None:
        topics = {
            key: value
            for key, value in (
                ("SuccessTopic", settings.asynchronous.success_topic),
                ("ErrorTopic", settings.asynchronous.error_topic),
            )
            if value
        }
        asynchronous = {
            "OutputConfig": {
                "S3OutputPath": f"{ctx.cfg.aws.s3_root}/async/{stage}/output",
                "S3FailurePath": f"{ctx.cfg.aws.s3_root}/async/{stage}/failures",
                **({"NotificationConfig": topics} if topics else {}),
                **({"KmsKeyId": ctx.kms_key} if ctx.kms_key else {}),
            },
            "ClientConfig": {
                "MaxConcurrentInvocationsPerInstance": settings.asynchronous.max_concurrent_invocations
            },
        }
    args = ctx.session.create_endpoint_config(
        name=Join(on="-", values=[endpoint_name(ctx, stage), ExecutionVariables.PIPELINE_EXECUTION_ID]),
        production_variants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": model_step.properties.ModelName,
                "InstanceType": settings.instance_type,
                "InitialInstanceCount": settings.instance_count,
            }
        ],
        tags=ctx.tags() or None,
        kms_key=ctx.kms_key,
        data_capture_config_dict=capture,
        async_inference_config_dict=asynchronous,
    )
    return EndpointConfigStep(
        name=f"{stage.capitalize()}EndpointConfig",
        step_args=args,
        description=f"{stage} endpoint config: production variant, data capture, KMS",
        retry_policies=ctx.retry_policies(job=False),
    )


def deployment_config(ctx: StepContext, stage: str, settings: Endpoint) -> dict | None:
    """Blue/green traffic shifting with automatic rollback on the stage's CloudWatch alarms."""
    bg = settings.blue_green
    if bg is None:
        return None
    routing: dict = {"Type": bg.type, "WaitIntervalInSeconds": bg.wait_s}
    if bg.type == "CANARY":
        routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": bg.step_percent}
    elif bg.type == "LINEAR":
        routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": bg.step_percent}
    config: dict = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": bg.termination_wait_s,
        }
    }
    if settings.rollback_alarms is not None:
        from steps.endpoint_ops.code.endpoint_ops import alarm_names

        config["AutoRollbackConfiguration"] = {
            "Alarms": [{"AlarmName": n} for n in alarm_names(endpoint_name(ctx, stage))]
        }
    return config


def build_endpoint(ctx: StepContext, stage: str, settings: Endpoint, config_step, depends_on=None):
    from sagemaker.mlops.workflow.endpoint_step import EndpointStep

    args = ctx.session.create_endpoint(
        endpoint_name=endpoint_name(ctx, stage),
        config_name=config_step.properties.EndpointConfigName,
        tags=ctx.tags() or None,
    )
    deployment = deployment_config(ctx, stage, settings)
    if deployment:
        # CreateEndpoint takes DeploymentConfig; the SDK helper has no argument for it.
        args.args["DeploymentConfig"] = deployment
    return EndpointStep(
        name=f"{stage.capitalize()}Endpoint",
        step_args=args,
        description=f"create or update the {stage} endpoint",
        depends_on=depends_on,
    )
