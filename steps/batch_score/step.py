"""Batch score steps: resolve the version to score with -> (CreateModel) -> batch transform -> summary.

The model itself is the model-deploy pipeline's own CreateModel step (``steps.endpoint.step.build_model``):
a SageMaker model from the model package, whose container is the package's serving image and
``code/inference.py``. The transform serves it on its own runtime, one CSV line (a row of 64 pixels) per
record and one answer line per request.
"""

from __future__ import annotations

from steps.context import PROCESSING_ROOT, StepContext, code_input, processing_input, processing_output

RESOLVE = "ResolveModelPackage"
RESOLVED = "ResolvedModelPackage"
TRANSFORM = "BatchTransform"
SUMMARY = "Summarize"
SUMMARY_REPORT = "BatchScoreSummary"
BUNDLE = "batch_score"
# The model server's payload contract (code/inference.py): CSV rows in, one JSON answer per request out.
SPLIT_TYPE = "Line"
ASSEMBLE_WITH = "Line"


def run_uri(output_uri, *parts: str):
    """<OutputUri>/<execution id>/<parts>: every run writes below its own prefix."""
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join

    return Join(on="/", values=[output_uri, ExecutionVariables.PIPELINE_EXECUTION_ID, *parts])


def build_resolve(ctx: StepContext, package_arn):
    """The given ModelPackageArn, else the group's latest Approved version when the run executes."""
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    from steps.batch_score.code.resolve_model import OUTPUT_DIR, OUTPUT_FILE

    settings = ctx.cfg.batch_score.job
    processor = ctx.processor(settings, settings.image, "resolve_model.py", "resolve-model")
    resolved = PropertyFile(name=RESOLVED, output_name="model_package", path=OUTPUT_FILE)
    args = processor.run(
        inputs=[code_input(ctx.code_bundle(BUNDLE))],
        outputs=[processing_output("model_package", ctx.output_uri("batch-score", "model-package"), OUTPUT_DIR)],
        arguments=["--model-package-group", ctx.cfg.registry.model_package_group,
                   "--model-package-arn", package_arn],
    )  # fmt: skip
    step = ProcessingStep(
        name=RESOLVE,
        step_args=args,
        description="The model package version to score with: the given ARN, else the latest Approved",
        property_files=[resolved],
        retry_policies=ctx.retry_policies(),
    )
    return step, resolved


def resolved_arn(resolve_step, resolved):
    from sagemaker.core.workflow.functions import JsonGet

    return JsonGet(step_name=resolve_step.name, property_file=resolved, json_path="ModelPackageArn")


def build_transform(ctx: StepContext, model_step, input_uri, output_uri):
    from sagemaker.core.transformer import Transformer
    from sagemaker.mlops.workflow.steps import TransformStep

    t = ctx.cfg.batch_score.transform
    transformer = Transformer(
        model_name=model_step.properties.ModelName,
        instance_count=t.instance_count,
        instance_type=t.instance_type,
        strategy=t.batch_strategy,
        assemble_with=ASSEMBLE_WITH,
        output_path=run_uri(output_uri, "predictions"),
        output_kms_key=ctx.kms_key,
        accept=t.accept,
        max_concurrent_transforms=t.max_concurrent_transforms,
        max_payload=t.max_payload_mb,
        tags=ctx.tags() or None,
        base_transform_job_name=f"{ctx.cfg.project.name}-batch-score",
        sagemaker_session=ctx.session,
        volume_kms_key=ctx.kms_key,
    )
    args = transformer.transform(
        data=input_uri,
        data_type="S3Prefix",
        content_type=t.content_type,
        split_type=SPLIT_TYPE,
        join_source=t.join_source if t.join_source != "None" else None,
        model_client_config={"InvocationsTimeoutInSeconds": t.invocations_timeout_s},
    )
    return TransformStep(
        name=TRANSFORM,
        step_args=args,
        description="Batch transform of the input rows on the model's own serving runtime",
        retry_policies=ctx.retry_policies(),
    )


def build_summary(ctx: StepContext, transform_step, input_uri, output_uri, package_arn):
    """Rows in vs predictions out, per file and per label; fails when a row has no prediction."""
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    from steps.batch_score.code.summarize import OUTPUT_DIR, OUTPUT_FILE

    settings = ctx.cfg.batch_score.job
    processor = ctx.processor(settings, settings.image, "summarize.py", "summarize")
    report = PropertyFile(name=SUMMARY_REPORT, output_name="summary", path=OUTPUT_FILE)
    args = processor.run(
        inputs=[
            processing_input("data", input_uri, f"{PROCESSING_ROOT}/input/data"),
            processing_input(
                "predictions",
                transform_step.properties.TransformOutput.S3OutputPath,
                f"{PROCESSING_ROOT}/input/predictions",
            ),
            code_input(ctx.code_bundle(BUNDLE)),
        ],
        outputs=[processing_output("summary", run_uri(output_uri, "summary"), str(OUTPUT_DIR))],
        arguments=["--model-package-arn", package_arn],
    )
    step = ProcessingStep(
        name=SUMMARY,
        step_args=args,
        description="Rows scored, predictions per label; fails unless every input row has one prediction",
        property_files=[report],
        retry_policies=ctx.retry_policies(),
    )
    return step, report
