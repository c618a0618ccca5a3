"""aws/amazon-sagemaker-examples: ml_ops/sm-pipelines_emr_step_with_running_emr_cluster.ipynb (abalone: an
EMRStep runs a PySpark preprocessing script on a running cluster, then built-in XGBoost training,
evaluation, condition and registration, the EMR step's outputs reached by fixed S3 paths and DependsOn).
Its pipeline cells, in order.

Changes (``# corpus:``): sessions get the fake region's boto session and a literal bucket; the role is
literal; ``pipeline.definition()`` is written out instead of upserted. The cluster id stays the notebook's
placeholder "j-ABCDEFGHIJKLM". The input stays where the notebook reads it
(s3://sagemaker-example-files-prod-us-east-1/...); build.py puts a generated file there.
"""

import os

from common import BUCKET, REGION, freeze, get_execution_role, write_definition

freeze()  # corpus: a stopped clock and seeded uuid4, so SDK-generated names are reproducible

import json  # noqa: E402, F401

import boto3  # noqa: E402
import sagemaker  # noqa: E402
import sagemaker.session  # noqa: E402
from sagemaker.estimator import Estimator  # noqa: E402
from sagemaker.inputs import TrainingInput  # noqa: E402
from sagemaker.model import Model  # noqa: E402
from sagemaker.model_metrics import (  # noqa: E402
    MetricsSource,
    ModelMetrics,
)
from sagemaker.processing import (  # noqa: E402
    ProcessingInput,
    ProcessingOutput,
    ScriptProcessor,
)
from sagemaker.workflow.condition_step import (  # noqa: E402
    ConditionStep,
)
from sagemaker.workflow.conditions import ConditionLessThanOrEqualTo  # noqa: E402
from sagemaker.workflow.emr_step import EMRStep, EMRStepConfig  # noqa: E402
from sagemaker.workflow.functions import (  # noqa: E402
    JsonGet,
)
from sagemaker.workflow.model_step import ModelStep  # noqa: E402
from sagemaker.workflow.parameters import (  # noqa: E402
    ParameterInteger,
    ParameterString,
)
from sagemaker.workflow.pipeline import Pipeline  # noqa: E402
from sagemaker.workflow.pipeline_context import PipelineSession  # noqa: E402
from sagemaker.workflow.properties import PropertyFile  # noqa: E402
from sagemaker.workflow.steps import (  # noqa: E402
    ProcessingStep,
    TrainingStep,
)

# Create the SageMaker Session

sagemaker_session = sagemaker.Session(
    boto_session=boto3.Session(region_name=REGION),
    default_bucket=BUCKET,  # corpus: region, literal bucket
)
role = get_execution_role()  # corpus: was sagemaker.get_execution_role()
region = sagemaker_session.boto_region_name
boto_session = boto3.Session(region_name=region)
sagemaker_client = sagemaker_session.sagemaker_client
default_bucket = sagemaker_session.default_bucket()
default_bucket_prefix = sagemaker_session.default_bucket_prefix

pipeline_session = PipelineSession(
    boto_session=boto_session,
    sagemaker_client=sagemaker_client,
    default_bucket=default_bucket,
)

model_package_group_name = "AbalonePackageGroup"
pipeline_name = "EMRStepPipeline"
base_job_prefix = "emr-step-pipeline"

# If a default bucket prefix is specified, append it to the s3 path
if default_bucket_prefix:
    base_job_prefix = f"{default_bucket_prefix}/{base_job_prefix}"

processing_instance_type = "ml.m5.xlarge"
training_instance_type = "ml.m5.xlarge"
BASE_DIR = "code"

cluster = "j-ABCDEFGHIJKLM"  # Replace with your running EMR cluster ID

# Define variables and parameters needed for the Pipeline steps
# parameters for pipeline execution

cluster_id = ParameterString(name="ClusterId", default_value=cluster)

processing_instance_count = ParameterInteger(name="ProcessingInstanceCount", default_value=1)
model_approval_status = ParameterString(name="ModelApprovalStatus", default_value="PendingManualApproval")
input_data = ParameterString(
    name="InputDataUrl",
    default_value=f"s3://sagemaker-example-files-prod-{region}/datasets/tabular/uci_abalone/abalone.csv",
)

output_path = f"s3://{default_bucket}/{base_job_prefix}/prep"

script = sagemaker_session.upload_data("code/preprocess.py", key_prefix=f"{base_job_prefix}/app")

# Process the training data step using a PySpark script.
# Split the training data set into train, test, and validation datasets
# Run as a step on EMR
emr_config = EMRStepConfig(
    jar="command-runner.jar",
    args=[
        "spark-submit",
        "--deploy-mode",
        "cluster",
        script,
        "--input",
        input_data,
        "--output",
        output_path,
    ],
)

step_emr = EMRStep(
    name="EMRStep",
    cluster_id=cluster_id,
    step_config=emr_config,
    display_name="Preprocess",
    description="preprocess data for XGBoost",
)

# training step for generating model artifacts
model_path = f"s3://{default_bucket}/{base_job_prefix}/AbaloneTrain"
image_uri = sagemaker.image_uris.retrieve(
    framework="xgboost",
    region=region,
    version="1.0-1",
    py_version="py3",
    instance_type=training_instance_type,
)
xgb_train = Estimator(
    image_uri=image_uri,
    instance_type=training_instance_type,
    instance_count=1,
    output_path=model_path,
    base_job_name=f"{base_job_prefix}/abalone-train",
    sagemaker_session=pipeline_session,
    role=role,
)
xgb_train.set_hyperparameters(
    objective="reg:linear",
    num_round=50,
    max_depth=5,
    eta=0.2,
    gamma=4,
    min_child_weight=6,
    subsample=0.7,
    silent=0,
)
step_args = xgb_train.fit(
    inputs={
        "train": TrainingInput(
            s3_data=f"{output_path}/train",
            content_type="text/csv",
        ),
        "validation": TrainingInput(
            s3_data=f"{output_path}/valid",
            content_type="text/csv",
        ),
    },
)
step_train = TrainingStep(
    name="TrainAbaloneModel",
    step_args=step_args,
)

step_train.add_depends_on([step_emr])

script_eval = ScriptProcessor(
    image_uri=image_uri,
    command=["python3"],
    instance_type=processing_instance_type,
    instance_count=1,
    base_job_name=f"{base_job_prefix}/script-abalone-eval",
    sagemaker_session=pipeline_session,
    role=role,
)
step_args = script_eval.run(
    inputs=[
        ProcessingInput(
            source=step_train.properties.ModelArtifacts.S3ModelArtifacts,
            destination="/opt/ml/processing/model",
        ),
        ProcessingInput(
            source=f"{output_path}/test",
            destination="/opt/ml/processing/test",
        ),
    ],
    outputs=[
        ProcessingOutput(output_name="evaluation", source="/opt/ml/processing/evaluation"),
    ],
    code=os.path.join(BASE_DIR, "evaluate.py"),
)
evaluation_report = PropertyFile(
    name="AbaloneEvaluationReport",
    output_name="evaluation",
    path="evaluation.json",
)
step_eval = ProcessingStep(
    name="EvaluateAbaloneModel",
    step_args=step_args,
    property_files=[evaluation_report],
)

step_eval.add_depends_on([step_emr])

# register model step that will be conditionally executed
model_metrics = ModelMetrics(
    model_statistics=MetricsSource(
        s3_uri="{}/evaluation.json".format(
            step_eval.arguments["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
        ),
        content_type="application/json",
    )
)
model = Model(
    image_uri=image_uri,
    model_data=step_train.properties.ModelArtifacts.S3ModelArtifacts,
    sagemaker_session=pipeline_session,
    role=role,
)
step_args = model.register(
    content_types=["text/csv"],
    response_types=["text/csv"],
    inference_instances=["ml.t2.medium", "ml.m5.large"],
    transform_instances=["ml.m5.large"],
    model_package_group_name=model_package_group_name,
    approval_status=model_approval_status,
    model_metrics=model_metrics,
)
step_register = ModelStep(
    name="RegisterAbaloneModel",
    step_args=step_args,
)

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
    if_steps=[step_register],
    else_steps=[],
)

# Use the same pipeline name across executions for cache usage.

pipeline = Pipeline(
    name=pipeline_name,
    parameters=[
        cluster_id,
        processing_instance_type,
        processing_instance_count,
        training_instance_type,
        model_approval_status,
        input_data,
    ],
    steps=[step_emr, step_train, step_eval, step_cond],
    sagemaker_session=pipeline_session,
)

write_definition(pipeline)  # corpus: the notebook shows json.loads(pipeline.definition()), then upserts
