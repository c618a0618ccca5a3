"""The model-build DAG: preprocess -> validate-data -> train -> evaluate -> metric >= threshold ? register : fail.

This module only wires steps (each lives in ``steps/<name>/step.py``); it reads like the picture above.
"""

from __future__ import annotations

from steps.context import StepContext
from steps.evaluate import step as evaluate
from steps.preprocess import step as preprocess
from steps.register import step as register
from steps.train import step as train
from steps.validate_data import step as validate_data

CHECK_NAME = "CheckMetric"
FAIL_NAME = "MetricBelowThreshold"


def parameters(cfg) -> dict:
    from sagemaker.core.workflow.parameters import ParameterFloat, ParameterString

    return {
        "InputDataUri": ParameterString(name="InputDataUri", default_value=cfg.data.input_uri),
        "MetricThreshold": ParameterFloat(name="MetricThreshold", default_value=cfg.evaluation.threshold),
        "ModelApprovalStatus": ParameterString(
            name="ModelApprovalStatus", default_value="PendingManualApproval"
        ),
    }


def build_pipeline(ctx: StepContext):
    from sagemaker.core.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.pipeline import Pipeline

    cfg = ctx.cfg
    threshold = ctx.parameters["MetricThreshold"]

    prep = preprocess.build(ctx)
    gate = validate_data.build(ctx, prep)
    fit = train.build(ctx, prep, depends_on=[gate])
    score, report = evaluate.build(ctx, prep, fit)

    metric = JsonGet(
        step_name=score.name,
        property_file=report,
        json_path=f"multiclass_classification_metrics.{cfg.evaluation.metric}.value",
    )
    fail = FailStep(
        name=FAIL_NAME,
        error_message=Join(
            on=" ",
            values=[
                f"Model not registered: {cfg.evaluation.metric}",
                metric,
                "is below the threshold",
                threshold,
            ],
        ),
    )
    check = ConditionStep(
        name=CHECK_NAME,
        conditions=[ConditionGreaterThanOrEqualTo(left=metric, right=threshold)],
        if_steps=[register.build(ctx, fit, score)],
        else_steps=[fail],
    )
    return Pipeline(
        name=cfg.project.build_pipeline,
        parameters=list(ctx.parameters.values()),
        steps=[prep, gate, fit, score, check],
        mlflow_config=mlflow_config(cfg),
        sagemaker_session=ctx.session,
    )


def mlflow_config(cfg):
    """The pipeline's MlflowConfig: the SageMaker-managed tracking server of ``tracking.mlflow``, or None."""
    from sagemaker.core.shapes.shapes import MlflowConfig

    tracking = cfg.tracking.mlflow
    if not tracking.enabled or not tracking.tracking_server_arn:
        return None
    return MlflowConfig(
        mlflow_resource_arn=tracking.tracking_server_arn,
        mlflow_experiment_name=tracking.experiment_name(cfg.project.name, cfg.env),
    )
