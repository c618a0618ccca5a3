"""What every step builder needs: the config, the offline SDK session, bundles and shared job settings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlops.compile.bundles import Bundle, BundleRegistry
from steps.config import Config, Image, Instances

STEPS_DIR = Path(__file__).resolve().parent
PROCESSING_ROOT = "/opt/ml/processing"


@dataclass
class StepContext:
    cfg: Config
    session: object  # sagemaker PipelineSession (offline)
    bundles: BundleRegistry
    parameters: dict  # name -> SDK Parameter
    root: Path  # the project root (config files such as the expectation suite are relative to it)

    # ------------------------------------------------------------------------------------ shared settings
    @property
    def role(self) -> str:
        return self.cfg.aws.role_arn

    @property
    def kms_key(self) -> str | None:
        return self.cfg.aws.kms_key_id

    def tags(self) -> list[dict]:
        return [{"Key": k, "Value": v} for k, v in sorted(self.cfg.aws.tags.items())]

    def image_uri(self, image: Image, instance_type: str, scope: str) -> str:
        from sagemaker.core import image_uris

        return image_uris.retrieve(
            framework=image.framework,
            region=self.cfg.aws.region,
            version=image.version,
            py_version=image.py_version,
            instance_type=instance_type,
            image_scope=scope,
        )

    def network_config(self):
        net = self.cfg.aws.network
        if not net.subnets:
            return None
        from sagemaker.core.network import NetworkConfig

        return NetworkConfig(subnets=list(net.subnets), security_group_ids=list(net.security_group_ids))

    def retry_policies(self, job: bool = True) -> list:
        """Service faults and throttling for every step; capacity errors too for job steps."""
        from sagemaker.mlops.workflow.retry import (
            SageMakerJobExceptionTypeEnum,
            SageMakerJobStepRetryPolicy,
            StepExceptionTypeEnum,
            StepRetryPolicy,
        )

        r = self.cfg.retry
        common = dict(max_attempts=r.max_attempts, interval_seconds=r.interval_s, backoff_rate=r.backoff_rate)
        policies = [
            StepRetryPolicy(
                exception_types=[StepExceptionTypeEnum.SERVICE_FAULT, StepExceptionTypeEnum.THROTTLING],
                **common,
            )
        ]
        if not job:
            return policies
        return policies + [
            SageMakerJobStepRetryPolicy(
                exception_types=[
                    SageMakerJobExceptionTypeEnum.CAPACITY_ERROR,
                    SageMakerJobExceptionTypeEnum.RESOURCE_LIMIT,
                    SageMakerJobExceptionTypeEnum.INTERNAL_ERROR,
                ],
                **common,
            ),
        ]

    def cache_config(self):
        from sagemaker.mlops.workflow.steps import CacheConfig

        c = self.cfg.cache
        return CacheConfig(enable_caching=c.enabled, expire_after=c.expire_after)

    def output_uri(self, step: str, name: str):
        """Per-execution output prefix: <s3_root>/executions/<execution id>/<step>/<name>."""
        from sagemaker.core.workflow.execution_variables import ExecutionVariables
        from sagemaker.core.workflow.functions import Join

        return Join(
            on="/",
            values=[self.cfg.aws.s3_root, "executions", ExecutionVariables.PIPELINE_EXECUTION_ID, step, name],
        )

    def code_bundle(self, name: str, path: Path | None = None) -> Bundle:
        return self.bundles.add(name, path or STEPS_DIR / name / "code")

    # ---------------------------------------------------------------------------------------- processing
    def processor(self, settings: Instances, image: Image, script: str, base_job_name: str):
        from sagemaker.core.processing import Processor

        return Processor(
            role=self.role,
            image_uri=self.image_uri(image, settings.instance_type, "training"),
            instance_count=settings.instance_count,
            instance_type=settings.instance_type,
            volume_size_in_gb=settings.volume_size_gb,
            volume_kms_key=self.kms_key,
            output_kms_key=self.kms_key,
            max_runtime_in_seconds=settings.max_runtime_s,
            entrypoint=["python3", f"{PROCESSING_ROOT}/input/code/{script}"],
            base_job_name=f"{self.cfg.project.name}-{base_job_name}",
            sagemaker_session=self.session,
            tags=self.tags() or None,
            network_config=self.network_config(),
        )


def processing_input(name: str, source, local_path: str, *, sharded: bool = False):
    from sagemaker.core.shapes import ProcessingInput, ProcessingS3Input

    return ProcessingInput(
        input_name=name,
        s3_input=ProcessingS3Input(
            s3_uri=source,
            local_path=local_path,
            s3_data_type="S3Prefix",
            s3_input_mode="File",
            s3_data_distribution_type="ShardedByS3Key" if sharded else "FullyReplicated",
        ),
    )


def processing_output(name: str, destination, local_path: str):
    from sagemaker.core.shapes import ProcessingOutput, ProcessingS3Output

    return ProcessingOutput(
        output_name=name,
        s3_output=ProcessingS3Output(s3_uri=destination, local_path=local_path, s3_upload_mode="EndOfJob"),
    )


def code_input(bundle: Bundle):
    return processing_input("code", bundle.s3_uri, f"{PROCESSING_ROOT}/input/code")
