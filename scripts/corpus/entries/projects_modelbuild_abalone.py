"""The SageMaker Projects "model building, training and deployment" seed code (model-build repository),
as aws-samples/sagemaker-custom-project-templates ships it for GitLab:
mlops-template-gitlab/seedcode/mlops-gitlab-project-seedcode-model-build/pipelines/abalone/pipeline.py.

``source/pipelines/`` is the seed code unchanged; this script does what its CI job does
(``run-pipeline --module-name pipelines.abalone.pipeline --kwargs {...}``, .gitlab-ci.yml) up to the
definition: it calls ``get_pipeline(**kwargs)`` with the kwargs the CI passes, for a made-up project
``abalone-project`` / ``p-1a2b3c4d5e6f``, and writes ``pipeline.definition()`` instead of upserting.

Changes (``# corpus:``): the region, role and artifact bucket are the corpus's literals.
"""

from common import ACCOUNT, BUCKET, REGION, ROLE, freeze, write_definition

freeze()  # corpus: a stopped clock and seeded uuid4, so SDK-generated names are reproducible

from pipelines.abalone.pipeline import get_pipeline  # noqa: E402

# corpus: what .gitlab-ci.yml passes, with SAGEMAKER_PROJECT_NAME=abalone-project,
# SAGEMAKER_PROJECT_ID=p-1a2b3c4d5e6f, AWS_REGION, SAGEMAKER_PIPELINE_ROLE_ARN and ARTIFACT_BUCKET made up
project_name_id = "abalone-project-p-1a2b3c4d5e6f"
pipeline = get_pipeline(
    region=REGION,
    sagemaker_project_arn=f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:project/abalone-project",
    role=ROLE,
    default_bucket=BUCKET,
    pipeline_name=project_name_id,
    model_package_group_name=project_name_id,
    base_job_prefix=project_name_id,
)
write_definition(pipeline)
