"""Preprocess: clean the raw CSVs and split them deterministically into train/validation/test."""

from __future__ import annotations

from steps.context import PROCESSING_ROOT, StepContext, code_input, processing_input, processing_output

NAME = "Preprocess"
SPLITS = ("train", "validation", "test")


def build(ctx: StepContext):
    from sagemaker.mlops.workflow.steps import ProcessingStep

    settings = ctx.cfg.steps.preprocess
    split = ctx.cfg.data.split
    processor = ctx.processor(settings, settings.image, "preprocess.py", "preprocess")
    args = processor.run(
        inputs=[
            # Sharded so that N instances each clean their share of the files; the split is per row.
            processing_input(
                "raw", ctx.parameters["InputDataUri"], f"{PROCESSING_ROOT}/input/raw", sharded=True
            ),
            code_input(ctx.code_bundle("preprocess")),
        ],
        outputs=[
            processing_output(s, ctx.output_uri("preprocess", s), f"{PROCESSING_ROOT}/output/{s}") for s in SPLITS
        ],
        arguments=[
            "--train-ratio", str(split.train),
            "--validation-ratio", str(split.validation),
            "--test-ratio", str(split.test),
            "--seed", str(split.seed),
        ],
    )  # fmt: skip
    return ProcessingStep(
        name=NAME,
        step_args=args,
        description="Clean the raw digits CSVs and split them into train/validation/test",
        cache_config=ctx.cache_config(),
        retry_policies=ctx.retry_policies(),
    )


def split_uri(step, split: str):
    return step.properties.ProcessingOutputConfig.Outputs[split].S3Output.S3Uri
