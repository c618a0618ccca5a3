"""Train: distributed PyTorch (torchrun, DDP) on InstanceCount hosts, spot with checkpoints."""

from __future__ import annotations

from steps.context import STEPS_DIR, StepContext
from steps.preprocess.step import split_uri
from steps.train.metrics import METRIC_DEFINITIONS

NAME = "Train"


def build(ctx: StepContext, preprocess, depends_on):
    from sagemaker.core.shapes import MetricDefinition
    from sagemaker.core.training.configs import (
        CheckpointConfig,
        Compute,
        InputData,
        Networking,
        OutputDataConfig,
        SourceCode,
        StoppingCondition,
    )
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join
    from sagemaker.mlops.workflow.steps import TrainingStep
    from sagemaker.train import ModelTrainer
    from sagemaker.train.distributed import Torchrun

    t = ctx.cfg.steps.train
    net = ctx.cfg.aws.network
    s3_root = ctx.cfg.aws.s3_root
    trainer = ModelTrainer(
        training_image=ctx.image_uri(t.image, t.instance_type, "training"),
        role=ctx.role,
        sagemaker_session=ctx.session,
        base_job_name=f"{ctx.cfg.project.name}-train",
        source_code=SourceCode(source_dir=str(STEPS_DIR / "train" / "code"), entry_script="train.py"),
        distributed=Torchrun(process_count_per_node=t.processes_per_host),
        compute=Compute(
            instance_type=t.instance_type,
            instance_count=t.instance_count,
            volume_size_in_gb=t.volume_size_gb,
            volume_kms_key_id=ctx.kms_key,
            enable_managed_spot_training=t.spot.enabled,
        ),
        networking=Networking(
            subnets=list(net.subnets) or None,
            security_group_ids=list(net.security_group_ids) or None,
            enable_inter_container_traffic_encryption=t.inter_container_traffic_encryption,
        )
        if net.subnets or t.inter_container_traffic_encryption
        else None,
        stopping_condition=StoppingCondition(
            max_runtime_in_seconds=t.max_runtime_s,
            max_wait_time_in_seconds=t.spot.max_wait_s if t.spot.enabled else None,
        ),
        # Per execution: a retraining run starts from epoch 0, a resumed or retried job of the same
        # execution finds its own checkpoints.
        checkpoint_config=CheckpointConfig(
            s3_uri=Join(
                on="/",
                values=[
                    (t.spot.checkpoint_s3_uri or f"{s3_root}/checkpoints/train").rstrip("/"),
                    ExecutionVariables.PIPELINE_EXECUTION_ID,
                ],
            ),
            local_path="/opt/ml/checkpoints",
        ),
        output_data_config=OutputDataConfig(s3_output_path=f"{s3_root}/models", kms_key_id=ctx.kms_key),
        hyperparameters=t.hyperparameters.model_dump(),
        tags=[{"key": k, "value": v} for k, v in sorted(ctx.cfg.aws.tags.items())] or None,
    ).with_metric_definitions(
        [MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS]
    )
    args = trainer.train(
        input_data_config=[
            InputData(channel_name="train", data_source=split_uri(preprocess, "train")),
            InputData(channel_name="validation", data_source=split_uri(preprocess, "validation")),
        ]
    )
    return TrainingStep(
        name=NAME,
        step_args=args,
        description="Distributed PyTorch training (DDP over torchrun) on the validated splits",
        depends_on=depends_on,
        cache_config=ctx.cache_config(),
        retry_policies=ctx.retry_policies(),
    )
