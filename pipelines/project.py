"""How this project declares itself to the mlops toolkit (named by ``[tool.mlops]`` in pyproject.toml).

The toolkit calls ``declare()`` and never imports anything else of the project: the config schema, the
pipelines by key, the local endpoints' ports, what the local deploy gates on, and the seed data.
"""

from __future__ import annotations

from pathlib import Path

from mlops.project import BuildInputs, Declaration

BUILD = "model-build"
DEPLOY = "model-deploy"
STAGES = ("staging", "production")


def build_pipelines(inputs: BuildInputs) -> dict:
    from pipelines import model_build, model_deploy
    from steps.context import StepContext

    ctx = StepContext(
        cfg=inputs.cfg,
        session=inputs.session,
        bundles=inputs.bundles,
        parameters=model_build.parameters(inputs.cfg),
        root=inputs.root,
    )
    return {BUILD: model_build.build_pipeline(ctx), DEPLOY: model_deploy.build_pipeline(ctx)}


def endpoint_ports(cfg) -> dict[str, int]:
    return {f"{cfg.project.name}-{stage}": getattr(cfg.endpoints, stage).local_port for stage in STAGES}


def seed_data(cfg) -> dict:
    from steps.preprocess.data import write_digits_csv

    return {cfg.data.input_uri: lambda directory: write_digits_csv(Path(directory) / "digits.csv")}


def declare() -> Declaration:
    from steps.config import Config
    from steps.smoke_test.gate import plan_deploy

    return Declaration(
        config_schema=Config,
        build_pipelines=build_pipelines,
        default_pipeline=BUILD,
        deploy_pipeline=DEPLOY,
        endpoint_ports=endpoint_ports,
        plan_deploy=plan_deploy,
        seed_data=seed_data,
    )
