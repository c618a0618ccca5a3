"""Smoke test of the staging endpoint before production: sample payloads, accuracy floor, p95 latency."""

from __future__ import annotations

from steps.context import PROCESSING_ROOT, StepContext, code_input, processing_input, processing_output
from steps.endpoint.step import endpoint_name

NAME = "SmokeTest"


def build(ctx: StepContext, samples_uri, endpoint_step, target_model=None):
    """``target_model``: the TargetModel a multi-model staging endpoint is invoked with."""
    from sagemaker.mlops.workflow.steps import ProcessingStep

    smoke = ctx.cfg.endpoints.smoke_test
    settings = ctx.cfg.steps.evaluate
    processor = ctx.processor(settings, settings.image, "smoke_test.py", "smoke-test")
    # an asynchronous staging endpoint takes InvokeEndpointAsync only: payloads go through S3; a multi-model
    # one serves the version the request's TargetModel names
    mode_args = []
    if ctx.cfg.endpoints.staging.asynchronous is not None:
        mode_args = ["--async-input-uri", f"{ctx.cfg.aws.s3_root}/async/staging/smoke-test-input"]
    if target_model is not None:
        mode_args = ["--target-model", target_model]
    args = processor.run(
        inputs=[
            processing_input("samples", samples_uri, f"{PROCESSING_ROOT}/input/samples"),
            code_input(ctx.code_bundle("smoke_test")),
        ],
        outputs=[processing_output("report", ctx.output_uri("smoke-test", "report"), f"{PROCESSING_ROOT}/output/report")],
        arguments=["--endpoint", endpoint_name(ctx, "staging"), "--samples", str(smoke.samples),
                   "--min-accuracy", str(smoke.min_accuracy), "--max-p95-ms", str(smoke.max_p95_latency_ms),
                   *mode_args],
    )  # fmt: skip
    return ProcessingStep(
        name=NAME,
        step_args=args,
        description="Invoke the staging endpoint with test samples: status, schema, accuracy, p95 latency",
        depends_on=[endpoint_step],
        retry_policies=ctx.retry_policies(),
    )
