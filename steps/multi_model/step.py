"""A Processing step that copies the approved version's artifact under the multi-model prefix.

SageMaker has no step that puts a model package's artifact where a multi-model endpoint finds it: the job
(``code/publish_model.py``) copies it to ``<prefix>v<version>.tar.gz`` and its property file names that key,
the TargetModel the smoke test sends.
"""

from __future__ import annotations

from steps.context import StepContext, code_input, processing_output

NAME = "PublishMultiModelArtifact"
PROPERTY_FILE = "TargetModel"


def prefix(ctx: StepContext) -> str:
    """The ModelDataUrl of the multi-model container: one prefix per model package group."""
    return f"{ctx.cfg.aws.s3_root}/multi-model/{ctx.cfg.registry.model_package_group}/"


def build(ctx: StepContext, package_arn):
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    from steps.multi_model.code.publish_model import OUTPUT_DIR, OUTPUT_FILE

    settings = ctx.cfg.steps.evaluate  # a small CPU job: reuse the evaluation job's sizing
    processor = ctx.processor(settings, settings.image, "publish_model.py", "publish-model")
    target = PropertyFile(name=PROPERTY_FILE, output_name="target_model", path=OUTPUT_FILE)
    args = processor.run(
        inputs=[code_input(ctx.code_bundle("multi_model"))],
        outputs=[
            processing_output("target_model", ctx.output_uri("multi-model", "target-model"), OUTPUT_DIR)
        ],
        arguments=["--model-package-arn", package_arn, "--prefix", prefix(ctx)],
    )
    step = ProcessingStep(
        name=NAME,
        step_args=args,
        description="Copy the approved version's model.tar.gz under the multi-model prefix (its TargetModel)",
        property_files=[target],
        retry_policies=ctx.retry_policies(),
    )
    return step, target


def target_model(step, property_file):
    """The TargetModel key the publish step wrote (``v<version>.tar.gz``)."""
    from sagemaker.core.workflow.functions import JsonGet

    return JsonGet(step_name=step.name, property_file=property_file, json_path="TargetModel")
