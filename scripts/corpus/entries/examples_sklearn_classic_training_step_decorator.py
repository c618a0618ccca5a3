"""aws/amazon-sagemaker-examples: ml_ops/sm-pipelines_step_decorator_with_classic_training_step (a
scikit-learn framework estimator in a classic TrainingStep, whose model artifacts feed a ``@step``
function step). Its cells up to the pipeline, in order; config.yaml, requirements.txt and dummy_train.py
are the files the example ships (the notebook writes dummy_train.py).

Changes (``# corpus:``): the role is literal (the notebook's ``sagemaker.get_execution_role()``) and the
sessions the notebook leaves implicit get the fake region's boto session and a literal bucket (the
estimator's ``sagemaker_session``; the function step's session comes from ``Pipeline``); the
pipeline's definition is written out instead of upserted.
"""

import os

from common import BUCKET, REGION, freeze, get_execution_role, write_definition

freeze()  # corpus: a stopped clock and seeded uuid4, so SDK-generated names are reproducible

# Set path to config file
os.environ["SAGEMAKER_USER_CONFIG_OVERRIDE"] = os.getcwd()

import boto3  # noqa: E402
import sagemaker  # noqa: E402
from sagemaker.sklearn import SKLearn  # noqa: E402
from sagemaker.workflow.pipeline_context import PipelineSession  # noqa: E402
from sagemaker.workflow.steps import TrainingStep  # noqa: E402

# corpus: the notebook relies on the default session; here it is explicit
session = sagemaker.Session(boto_session=boto3.Session(region_name=REGION), default_bucket=BUCKET)

# Note: sagemaker.get_execution_role does not work outside sagemaker
role = get_execution_role()  # corpus: was sagemaker.get_execution_role()
sklearn_train = SKLearn(
    framework_version="1.2-1",
    entry_point="dummy_train.py",
    instance_type="ml.m5.large",
    keep_alive_period_in_seconds=600,
    role=role,
    sagemaker_session=session,  # corpus: explicit session
)

step_train = TrainingStep(
    name="my-train",
    display_name="TrainingStep",
    description="description for Training step",
    estimator=sklearn_train,
)

from sagemaker.workflow.function_step import step  # noqa: E402

evaluate_func_step_name = "my-evaluate"


@step(name=evaluate_func_step_name, role=role)  # corpus: role (the config's RoleArn is commented out)
def evaluate(model_path: str):
    print("model_path: ", model_path)
    return model_path


from sagemaker.workflow.pipeline import Pipeline  # noqa: E402

evaluation_result = evaluate(step_train.properties.ModelArtifacts.S3ModelArtifacts)

pipeline_name = "ClassicTraining-StepDecorator"
pipeline = Pipeline(
    name=pipeline_name,
    steps=[evaluation_result],
    sagemaker_session=PipelineSession(boto_session=session.boto_session, default_bucket=BUCKET),  # corpus
)

write_definition(pipeline)  # corpus: the notebook upserts and starts the pipeline
