"""Validate data: the great-expectations data-quality gate between preprocessing and training."""

from __future__ import annotations

from pathlib import Path

from steps.context import PROCESSING_ROOT, StepContext, code_input, processing_input, processing_output
from steps.preprocess.step import SPLITS, split_uri

NAME = "ValidateData"


def build(ctx: StepContext, preprocess):
    from sagemaker.mlops.workflow.steps import ProcessingStep

    settings = ctx.cfg.steps.validate_data
    suite = ctx.root / ctx.cfg.data.expectation_suite
    suite_bundle = ctx.bundles.add("expectations", suite)
    processor = ctx.processor(settings, settings.image, "validate.py", "validate-data")
    args = processor.run(
        inputs=[processing_input(s, split_uri(preprocess, s), f"{PROCESSING_ROOT}/input/{s}") for s in SPLITS]
        + [
            processing_input("suite", suite_bundle.s3_uri, f"{PROCESSING_ROOT}/input/suite"),
            code_input(ctx.code_bundle("validate_data")),
        ],
        outputs=[
            processing_output(
                "report", ctx.output_uri("validate-data", "report"), f"{PROCESSING_ROOT}/output/report"
            )
        ],
        arguments=["--suite", f"{PROCESSING_ROOT}/input/suite/{Path(suite).name}"],
    )
    return ProcessingStep(
        name=NAME,
        step_args=args,
        description="Run the great-expectations suite on every split; fail the pipeline on violations",
        cache_config=ctx.cache_config(),
        retry_policies=ctx.retry_policies(),
    )
