"""The model-deploy DAG: approved package -> model -> staging endpoint -> smoke test -> promotion -> production.

Started by the approval event (EventBridge passes the package ARN as ``ModelPackageArn``). Where config has
the promotion gate, a person promotes the version from staging (``mlops models promote``). Production gets
blue/green traffic shifting with automatic rollback on CloudWatch alarms, then target-tracking autoscaling.
``TargetStage=staging`` stops after the smoke test. A stage in ``mode: multi-model`` is served by a
MultiModel model over the multi-model prefix, where the version's artifact is published first; the smoke
test then names its TargetModel.
"""

from __future__ import annotations

from steps.context import StepContext
from steps.endpoint import step as endpoint
from steps.endpoint_ops import step as endpoint_ops
from steps.multi_model import step as multi_model
from steps.promotion_gate import step as promotion_gate
from steps.smoke_test import step as smoke_test

PROMOTE_NAME = "PromoteToProduction"


def parameters(cfg) -> dict:
    from sagemaker.core.workflow.parameters import ParameterString

    return {
        "ModelPackageArn": ParameterString(name="ModelPackageArn"),
        "TargetStage": ParameterString(
            name="TargetStage", default_value="production", enum_values=["staging", "production"]
        ),
        "SmokeTestDataUri": ParameterString(name="SmokeTestDataUri", default_value=cfg.data.input_uri),
    }


def build_pipeline(ctx: StepContext):
    from sagemaker.core.workflow.conditions import ConditionEquals
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    cfg = ctx.cfg
    params = parameters(cfg)
    ctx = StepContext(cfg=cfg, session=ctx.session, bundles=ctx.bundles, parameters=params, root=ctx.root)

    stages = {"staging": cfg.endpoints.staging, "production": cfg.endpoints.production}
    multi = {stage for stage, settings in stages.items() if settings.mode == "multi-model"}
    model = endpoint.build_model(ctx, params["ModelPackageArn"]) if len(multi) < len(stages) else None
    publish = target = mme_model = None
    if multi:
        publish, target_file = multi_model.build(ctx, params["ModelPackageArn"])
        target = multi_model.target_model(publish, target_file)
        mme_model = endpoint.build_multi_model(ctx, multi_model.prefix(ctx), depends_on=[publish])
    models = {stage: mme_model if stage in multi else model for stage in stages}

    staging_config = endpoint.build_endpoint_config(ctx, "staging", cfg.endpoints.staging, models["staging"])
    staging = endpoint.build_endpoint(ctx, "staging", cfg.endpoints.staging, staging_config)
    smoke = smoke_test.build(
        ctx, params["SmokeTestDataUri"], staging, target_model=target if "staging" in multi else None
    )

    gate = promotion_gate.build(ctx, params["ModelPackageArn"], smoke)
    production_config = endpoint.build_endpoint_config(
        ctx, "production", cfg.endpoints.production, models["production"]
    )
    alarms = endpoint_ops.build_alarms(ctx, "production")
    production = endpoint.build_endpoint(
        ctx, "production", cfg.endpoints.production, production_config,
        depends_on=[s for s in (alarms, gate) if s],
    )  # fmt: skip
    scaling = endpoint_ops.build_autoscaling(ctx, "production", production)
    promote = ConditionStep(
        name=PROMOTE_NAME,
        depends_on=[smoke],
        conditions=[ConditionEquals(left=params["TargetStage"], right="production")],
        if_steps=[s for s in (gate, production_config, alarms, production, scaling) if s],
        else_steps=[],
    )
    return Pipeline(
        name=cfg.project.deploy_pipeline,
        parameters=list(params.values()),
        steps=[s for s in (model, publish, mme_model, staging_config, staging, smoke, promote) if s],
        sagemaker_session=ctx.session,
    )
