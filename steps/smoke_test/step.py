"""Smoke test of the staging endpoint before production: sample payloads, accuracy floor, p95 latency."""

from __future__ import annotations

from steps.context import PROCESSING_ROOT, StepContext, code_input, processing_input, processing_output
from steps.endpoint.step import endpoint_name

NAME = "SmokeTest"


def build(ctx: StepContext, samples_uri, endpoint_step):
    from sagemaker.mlops.workflow.steps import ProcessingStep

    smoke = ctx.cfg.endpoints.smoke_test
    settings = ctx.cfg.steps.evaluate
    processor = ctx.processor(settings, settings.image, "smoke_test.py", "smoke-test")
    # an asynchronous staging endpoint takes InvokeEndpointAsync only: payloads go through S3
    asynchronous = []
    if ctx.cfg.endpoints.staging.asynchronous is not None:
        asynchronous = ["--async-input-uri", f"{ctx.cfg.aws.s3_root}/async/staging/smoke-test-input"]
    args = processor.run(
        inputs=[
            processing_input("samples", samples_uri, f"{PROCESSING_ROOT}/input/samples"),
            code_input(ctx.code_bundle("smoke_test")),
        ],
        outputs=[processing_output("report", ctx.output_uri("smoke-test", "report"), f"{PROCESSING_ROOT}/output/report")],
        arguments=["--endpoint", endpoint_name(ctx, "staging"), "--samples", str(smoke.samples),
                   "--min-accuracy", str(smoke.min_accuracy), "--max-p95-ms", str(smoke.max_p95_latency_ms),
                   *asynchronous],
    )  # fmt: skip
    return ProcessingStep(
        name=NAME,
        step_args=args,
        description="Invoke the staging endpoint with test samples: status, schema, accuracy, p95 latency",
        depends_on=[endpoint_step],
        retry_policies=ctx.retry_policies(),
    )
