"""Evaluate: score the trained model on the test split; evaluation.json is a PropertyFile."""

from __future__ import annotations

from steps.context import PROCESSING_ROOT, StepContext, code_input, processing_input, processing_output
from steps.preprocess.step import split_uri

NAME = "Evaluate"
REPORT = "EvaluationReport"
REPORT_FILE = "evaluation.json"


def build(ctx: StepContext, preprocess, train):
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.steps import ProcessingStep

    settings = ctx.cfg.steps.evaluate
    processor = ctx.processor(settings, settings.image, "evaluate.py", "evaluate")
    report = PropertyFile(name=REPORT, output_name="evaluation", path=REPORT_FILE)
    args = processor.run(
        inputs=[
            processing_input(
                "model", train.properties.ModelArtifacts.S3ModelArtifacts, f"{PROCESSING_ROOT}/input/model"
            ),
            processing_input("test", split_uri(preprocess, "test"), f"{PROCESSING_ROOT}/input/test"),
            code_input(ctx.code_bundle("evaluate")),
        ],
        outputs=[
            processing_output(
                "evaluation", ctx.output_uri("evaluate", "evaluation"), f"{PROCESSING_ROOT}/evaluation"
            )
        ],
    )
    step = ProcessingStep(
        name=NAME,
        step_args=args,
        description="Score the model on the held-out test split",
        property_files=[report],
        cache_config=ctx.cache_config(),
        retry_policies=ctx.retry_policies(),
    )
    return step, report


def report_uri(step):
    from sagemaker.core.workflow.functions import Join

    return Join(
        on="/",
        values=[step.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri, REPORT_FILE],
    )
