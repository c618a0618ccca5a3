"""How this project declares itself to the mlops toolkit (named by ``[tool.mlops]`` in pyproject.toml).

The toolkit calls ``declare()`` and never imports anything else of the project: the config schema, the
pipelines by key, the local endpoints' ports, what the local deploy gates on, the promotion gate, what a start resolves (the
version batch scoring uses) and the seed data.
"""

from __future__ import annotations

from pathlib import Path

from mlops.project import BuildInputs, Declaration, StartRequest

BUILD = "model-build"
DEPLOY = "model-deploy"
SCORE = "batch-score"
STAGES = ("staging", "production")


def build_pipelines(inputs: BuildInputs) -> dict:
    from pipelines import batch_score, model_build, model_deploy
    from steps.context import StepContext

    ctx = StepContext(
        cfg=inputs.cfg,
        session=inputs.session,
        bundles=inputs.bundles,
        parameters=model_build.parameters(inputs.cfg),
        root=inputs.root,
    )
    return {
        BUILD: model_build.build_pipeline(ctx),
        DEPLOY: model_deploy.build_pipeline(ctx),
        SCORE: batch_score.build_pipeline(ctx),
    }


def start_parameters(request: StartRequest) -> dict[str, str]:
    if request.pipeline == SCORE:
        from steps.batch_score.start import start_parameters as score

        return score(request)
    return {}


def endpoint_ports(cfg) -> dict[str, int]:
    return {f"{cfg.project.name}-{stage}": getattr(cfg.endpoints, stage).local_port for stage in STAGES}


def seed_data(cfg) -> dict:
    from steps.batch_score.data import write_scoring_csv
    from steps.preprocess.data import write_digits_csv

    return {
        cfg.data.input_uri: lambda directory: write_digits_csv(Path(directory) / "digits.csv"),
        f"{cfg.aws.s3_root}/{cfg.batch_score.input_prefix}/": lambda directory: write_scoring_csv(
            Path(directory) / "digits-pixels.csv"
        ),
    }


def declare() -> Declaration:
    from steps.config import Config
    from steps.promotion_gate.step import declaration as promotion
    from steps.smoke_test.gate import plan_deploy

    return Declaration(
        config_schema=Config,
        build_pipelines=build_pipelines,
        default_pipeline=BUILD,
        deploy_pipeline=DEPLOY,
        endpoint_ports=endpoint_ports,
        plan_deploy=plan_deploy,
        seed_data=seed_data,
        pipelines=(SCORE,),
        start_parameters=start_parameters,
        schedules={"schedule": BUILD, "batch_score.schedule": SCORE},
        promotion=promotion(),
    )
