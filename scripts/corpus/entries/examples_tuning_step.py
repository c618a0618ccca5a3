"""aws/amazon-sagemaker-examples: ml_ops/sm-pipelines_hyperparameter_tuning.ipynb (abalone: SKLearnProcessor
with Join outputs on the execution id, a TuningStep over built-in XGBoost with CacheConfig "30d", models
created from the best and second-best training jobs, evaluation, condition, registration). Its cells up to
``pipeline.definition()``, in order.

Changes (``# corpus:``): sessions get the fake region's boto session and a literal bucket; the role is
literal; ``pipeline.definition()`` is written out instead of upserted. The input stays where the notebook
reads it (s3://sagemaker-example-files-prod-us-east-1/...); build.py puts a generated file there.
"""

from common import BUCKET, REGION, freeze, get_execution_role, write_definition

freeze()  # corpus: a stopped clock and seeded uuid4, so SDK-generated names are reproducible

import boto3  # noqa: E402
import sagemaker  # noqa: E402
from sagemaker import Model  # noqa: E402
from sagemaker.inputs import TrainingInput  # noqa: E402
from sagemaker.model_metrics import (  # noqa: E402
    MetricsSource,
    ModelMetrics,
)
from sagemaker.processing import (  # noqa: E402
    ProcessingInput,
    ProcessingOutput,
    ScriptProcessor,
)
from sagemaker.sklearn.processing import SKLearnProcessor  # noqa: E402
from sagemaker.tuner import (  # noqa: E402
    ContinuousParameter,
    HyperparameterTuner,
    WarmStartConfig,
    WarmStartTypes,
)
from sagemaker.workflow.condition_step import ConditionStep  # noqa: E402
from sagemaker.workflow.conditions import ConditionLessThanOrEqualTo  # noqa: E402
from sagemaker.workflow.execution_variables import ExecutionVariables  # noqa: E402
from sagemaker.workflow.functions import Join, JsonGet  # noqa: E402
from sagemaker.workflow.model_step import ModelStep  # noqa: E402
from sagemaker.workflow.parameters import (  # noqa: E402
    ParameterInteger,
    ParameterString,
)
from sagemaker.workflow.pipeline import Pipeline  # noqa: E402
from sagemaker.workflow.pipeline_context import PipelineSession  # noqa: E402
from sagemaker.workflow.properties import PropertyFile  # noqa: E402
from sagemaker.workflow.steps import CacheConfig, ProcessingStep, TuningStep  # noqa: E402
from sagemaker.xgboost import XGBoostPredictor  # noqa: E402

# Create the SageMaker Session

region = REGION  # corpus: was sagemaker.Session().boto_region_name
sm_client = boto3.client("sagemaker", region_name=region)
boto_session = boto3.Session(region_name=region)
sagemaker_session = sagemaker.session.Session(
    boto_session=boto_session,
    sagemaker_client=sm_client,
    default_bucket=BUCKET,  # corpus: literal bucket
)

# Create a Pipeline Session
pipeline_session = PipelineSession(boto_session=boto_session, default_bucket=BUCKET)  # corpus: as above

# Define variables and parameters needed for the Pipeline steps

role = get_execution_role()  # corpus: was sagemaker.get_execution_role()
default_bucket = sagemaker_session.default_bucket()
default_bucket_prefix = sagemaker_session.default_bucket_prefix
base_job_prefix = "tuning-step-example"

# If a default bucket prefix is specified, append it to the s3 path
if default_bucket_prefix:
    base_job_prefix = f"{default_bucket_prefix}/{base_job_prefix}"

model_package_group_name = "tuning-job-model-packages"

processing_instance_count = ParameterInteger(name="ProcessingInstanceCount", default_value=1)
training_instance_type = ParameterString(name="TrainingInstanceType", default_value="ml.m5.xlarge")
model_approval_status = ParameterString(name="ModelApprovalStatus", default_value="PendingManualApproval")
input_data = ParameterString(
    name="InputDataUrl",
    default_value=f"s3://sagemaker-example-files-prod-{region}/datasets/tabular/uci_abalone/abalone.csv",
)
model_approval_status = ParameterString(name="ModelApprovalStatus", default_value="PendingManualApproval")

# Cache Pipeline steps to reduce execution time on subsequent executions
cache_config = CacheConfig(enable_caching=True, expire_after="30d")

# Process the training data step using a python script.
# Split the training data set into train, test, and validation datasets
# When defining the ProcessingOutput destination as a dynamic value using the
# Pipeline Execution ID, caching will not be in effect as each time the step runs,
# the step definition changes resulting in new execution. If caching is required,
# the ProcessingOutput definition should be status

sklearn_processor = SKLearnProcessor(
    framework_version="1.2-1",
    instance_type="ml.m5.xlarge",
    instance_count=processing_instance_count,
    base_job_name=f"{base_job_prefix}/sklearn-abalone-preprocess",
    sagemaker_session=pipeline_session,
    role=role,
)

processor_run_args = sklearn_processor.run(
    outputs=[
        ProcessingOutput(
            output_name="train",
            source="/opt/ml/processing/train",
            destination=Join(
                on="/",
                values=[
                    "s3:/",
                    default_bucket,
                    base_job_prefix,
                    ExecutionVariables.PIPELINE_EXECUTION_ID,
                    "PreprocessAbaloneDataForHPO",
                ],
            ),
        ),
        ProcessingOutput(
            output_name="validation",
            source="/opt/ml/processing/validation",
            destination=Join(
                on="/",
                values=[
                    "s3:/",
                    default_bucket,
                    base_job_prefix,
                    ExecutionVariables.PIPELINE_EXECUTION_ID,
                    "PreprocessAbaloneDataForHPO",
                ],
            ),
        ),
        ProcessingOutput(
            output_name="test",
            source="/opt/ml/processing/test",
            destination=Join(
                on="/",
                values=[
                    "s3:/",
                    default_bucket,
                    base_job_prefix,
                    ExecutionVariables.PIPELINE_EXECUTION_ID,
                    "PreprocessAbaloneDataForHPO",
                ],
            ),
        ),
    ],
    code="code/preprocess.py",
    arguments=["--input-data", input_data],
)

step_process = ProcessingStep(
    name="PreprocessAbaloneDataForHPO",
    step_args=processor_run_args,
)

# Define the output path for the model artifacts from the Hyperparameter Tuning Job
model_path = f"s3://{default_bucket}/{base_job_prefix}/AbaloneTrain"

image_uri = sagemaker.image_uris.retrieve(
    framework="xgboost",
    region=region,
    version="1.0-1",
    py_version="py3",
    instance_type="ml.m5.xlarge",
)

xgb_train = sagemaker.estimator.Estimator(
    image_uri=image_uri,
    instance_type=training_instance_type,
    instance_count=1,
    output_path=model_path,
    base_job_name=f"{base_job_prefix}/abalone-train",
    sagemaker_session=pipeline_session,
    role=role,
)

xgb_train.set_hyperparameters(
    eval_metric="rmse",
    objective="reg:squarederror",  # Define the object metric for the training job
    num_round=50,
    max_depth=5,
    eta=0.2,
    gamma=4,
    min_child_weight=6,
    subsample=0.7,
    silent=0,
)

objective_metric_name = "validation:rmse"

hyperparameter_ranges = {
    "alpha": ContinuousParameter(0.01, 10, scaling_type="Logarithmic"),
    "lambda": ContinuousParameter(0.01, 10, scaling_type="Logarithmic"),
}

tuner_log = HyperparameterTuner(
    xgb_train,
    objective_metric_name,
    hyperparameter_ranges,
    max_jobs=3,
    max_parallel_jobs=3,
    strategy="Random",
    objective_type="Minimize",
)

hpo_args = tuner_log.fit(
    inputs={
        "train": TrainingInput(
            s3_data=step_process.properties.ProcessingOutputConfig.Outputs["train"].S3Output.S3Uri,
            content_type="text/csv",
        ),
        "validation": TrainingInput(
            s3_data=step_process.properties.ProcessingOutputConfig.Outputs["validation"].S3Output.S3Uri,
            content_type="text/csv",
        ),
    }
)

step_tuning = TuningStep(
    name="HPTuning",
    step_args=hpo_args,
    cache_config=cache_config,
)

# This is an example to illustrate how a the name of the tuning job from the previous step can be used as
# the parent tuning job, in practice, it is unlikely to have the parent job run before the warm start job
# on each run. (The notebook builds this step but leaves it out of the pipeline.)

parent_tuning_job_name = step_tuning.properties.HyperParameterTuningJobName

warm_start_config = WarmStartConfig(
    WarmStartTypes.IDENTICAL_DATA_AND_ALGORITHM, parents={parent_tuning_job_name}
)

tuner_log_warm_start = HyperparameterTuner(
    xgb_train,
    objective_metric_name,
    hyperparameter_ranges,
    max_jobs=3,
    max_parallel_jobs=3,
    strategy="Random",
    objective_type="Minimize",
    warm_start_config=warm_start_config,
)

tuner_run_args = tuner_log_warm_start.fit(
    inputs={
        "train": TrainingInput(
            s3_data=step_process.properties.ProcessingOutputConfig.Outputs["train"].S3Output.S3Uri,
            content_type="text/csv",
        ),
        "validation": TrainingInput(
            s3_data=step_process.properties.ProcessingOutputConfig.Outputs["validation"].S3Output.S3Uri,
            content_type="text/csv",
        ),
    }
)

step_tuning_warm_start = TuningStep(
    name="HPTuningWarmStart",
    step_args=tuner_run_args,
    cache_config=cache_config,
)

# Creating 2 SageMaker Models
model_prefix = f"{base_job_prefix}/AbaloneTrain"

best_model = Model(
    image_uri=image_uri,
    model_data=step_tuning.get_top_model_s3_uri(top_k=0, s3_bucket=default_bucket, prefix=model_prefix),
    predictor_cls=XGBoostPredictor,
    sagemaker_session=pipeline_session,
    role=role,
)

step_create_first = ModelStep(
    name="CreateBestModel",
    step_args=best_model.create(instance_type="ml.m5.xlarge"),
)

second_best_model = Model(
    image_uri=image_uri,
    model_data=step_tuning.get_top_model_s3_uri(top_k=1, s3_bucket=default_bucket, prefix=model_prefix),
    predictor_cls=XGBoostPredictor,
    sagemaker_session=pipeline_session,
    role=role,
)

step_create_second = ModelStep(
    name="CreateSecondBestModel",
    step_args=second_best_model.create(instance_type="ml.m5.xlarge"),
)

# A ProcessingStep is used to evaluate the performance of a selected model from the HPO step. In this case,
# the top performing model is evaluated. Based on the results of the evaluation, the model is registered
# into the Model Registry using a ConditionStep.

script_eval = ScriptProcessor(
    image_uri=image_uri,
    command=["python3"],
    instance_type="ml.m5.xlarge",
    instance_count=1,
    base_job_name=f"{base_job_prefix}/script-tuning-step-eval",
    sagemaker_session=pipeline_session,
    role=role,
)

evaluation_report = PropertyFile(
    name="BestTuningModelEvaluationReport",
    output_name="evaluation",
    path="evaluation.json",
)

processor_args = script_eval.run(
    inputs=[
        ProcessingInput(
            source=step_tuning.get_top_model_s3_uri(top_k=0, s3_bucket=default_bucket, prefix=model_prefix),
            destination="/opt/ml/processing/model",
        ),
        ProcessingInput(
            source=step_process.properties.ProcessingOutputConfig.Outputs["test"].S3Output.S3Uri,
            destination="/opt/ml/processing/test",
        ),
    ],
    outputs=[
        ProcessingOutput(output_name="evaluation", source="/opt/ml/processing/evaluation"),
    ],
    code="code/evaluate.py",
)

# This can be extended to evaluate multiple models from the HPO step
step_eval = ProcessingStep(
    name="EvaluateTopModel",
    step_args=processor_args,
    property_files=[evaluation_report],
    cache_config=cache_config,
)

model_metrics = ModelMetrics(
    model_statistics=MetricsSource(
        s3_uri="{}/evaluation.json".format(
            step_eval.arguments["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
        ),
        content_type="application/json",
    )
)

# Register the model in the Model Registry

register_args = best_model.register(
    content_types=["text/csv"],
    response_types=["text/csv"],
    inference_instances=["ml.t2.medium", "ml.m5.large"],
    transform_instances=["ml.m5.large"],
    model_package_group_name=model_package_group_name,
    approval_status=model_approval_status,
)

step_register_best = ModelStep(name="RegisterBestAbaloneModel", step_args=register_args)

# condition step for evaluating model quality and branching execution

cond_lte = ConditionLessThanOrEqualTo(
    left=JsonGet(
        step_name=step_eval.name,
        property_file=evaluation_report,
        json_path="regression_metrics.mse.value",
    ),
    right=6.0,
)
step_cond = ConditionStep(
    name="CheckMSEAbaloneEvaluation",
    conditions=[cond_lte],
    if_steps=[step_register_best],
    else_steps=[],
)

pipeline = Pipeline(
    name="tuning-step-pipeline",
    parameters=[
        processing_instance_count,
        training_instance_type,
        input_data,
        model_approval_status,
    ],
    steps=[
        step_process,
        step_tuning,
        step_create_first,
        step_create_second,
        step_eval,
        step_cond,
    ],
    sagemaker_session=pipeline_session,
)

write_definition(pipeline)  # corpus: the notebook shows json.loads(pipeline.definition()), then upserts
