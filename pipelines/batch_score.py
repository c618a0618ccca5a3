"""The batch-score DAG: version to score with -> model from its package -> batch transform -> summary.

Started by its EventBridge Scheduler schedule (infra/mlops.yaml), ``mlops start --pipeline batch-score``
or ``mlops run --pipeline batch-score``. ``ModelPackageArn`` empty means "the latest Approved version of
the group": the CLI resolves that from the registry before starting (and refuses when there is none);
a scheduled run, which no CLI starts, resolves it in ``ResolveModelPackage`` when it executes.
Results: ``<OutputUri>/<execution id>/predictions/<file>.out`` and ``.../summary/summary.json``.
"""

from __future__ import annotations

from steps.batch_score import step as batch_score
from steps.context import StepContext
from steps.endpoint import step as endpoint


def parameters(cfg) -> dict:
    from sagemaker.core.workflow.parameters import ParameterString

    score = cfg.batch_score
    return {
        "InputDataUri": ParameterString(
            name="InputDataUri", default_value=f"{cfg.aws.s3_root}/{score.input_prefix}/"
        ),
        "OutputUri": ParameterString(
            name="OutputUri", default_value=f"{cfg.aws.s3_root}/{score.output_prefix}"
        ),
        "ModelPackageArn": ParameterString(name="ModelPackageArn", default_value=""),
    }


def build_pipeline(ctx: StepContext):
    from sagemaker.mlops.workflow.pipeline import Pipeline

    cfg = ctx.cfg
    params = parameters(cfg)
    ctx = StepContext(cfg=cfg, session=ctx.session, bundles=ctx.bundles, parameters=params, root=ctx.root)

    resolve, resolved = batch_score.build_resolve(ctx, params["ModelPackageArn"])
    package_arn = batch_score.resolved_arn(resolve, resolved)
    model = endpoint.build_model(ctx, package_arn)
    transform = batch_score.build_transform(ctx, model, params["InputDataUri"], params["OutputUri"])
    summary, _ = batch_score.build_summary(
        ctx, transform, params["InputDataUri"], params["OutputUri"], package_arn
    )
    return Pipeline(
        name=cfg.batch_score.pipeline_name,
        parameters=list(params.values()),
        steps=[resolve, model, transform, summary],
        sagemaker_session=ctx.session,
    )
