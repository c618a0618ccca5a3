"""The real compile (SDK definitions + content-addressed bundles) through upsert and diff, CLI included."""

from __future__ import annotations

import json

import boto3
import pytest

from mlops.aws import events
from mlops.aws import pipelines_api as api
from mlops.aws.session import git_commit
from mlops.cli.main import main
from mlops.compile.compiler import compile_pipelines
from tests.project import PROJECT

pytestmark = pytest.mark.slow  # each compile runs the SageMaker SDK for ~10 s


def test_compiled_pipelines_upsert_then_the_cli_finds_nothing_to_do_until_config_changes(
    account, cfg, capsys, monkeypatch
):
    compiled = compile_pipelines(PROJECT, cfg)
    uploads, results = api.upsert(
        account, cfg, compiled.definitions, compiled.pipeline_names, compiled.bundles,
        commit=git_commit(PROJECT.root),
    )  # fmt: skip
    assert sorted((r.key, r.action) for r in results) == [
        ("batch-score", "created"),
        ("model-build", "created"),
        ("model-deploy", "created"),
    ]
    assert len(uploads.uploaded) == sum(len(b.files) for b in compiled.bundles)
    sm = boto3.client("sagemaker")
    for key, name in compiled.pipeline_names.items():
        deployed = sm.describe_pipeline(PipelineName=name)["PipelineDefinition"]
        assert json.loads(deployed) == json.loads(compiled.definitions[key])
    deploy = json.loads(compiled.definitions["model-deploy"])
    assert events.PACKAGE_ARN_PARAMETER in {p["Name"] for p in deploy["Parameters"]}  # the approval rule's

    # Same tree, same config: the CLI's own compile is byte-identical, so nothing is uploaded or updated.
    assert main(["upsert", "--env", "ci"]) == 0
    out = capsys.readouterr().out
    assert "0 file(s) uploaded" in out
    assert out.count("up to date") == 3

    monkeypatch.setenv("MLOPS__EVALUATION__THRESHOLD", "0.97")
    assert main(["diff", "--env", "ci", "--format", "json"]) == 1
    lines = json.loads(capsys.readouterr().out)
    assert lines[cfg.project.deploy_pipeline] == []
    changed = "\n".join(lines[cfg.project.build_pipeline])
    assert "0.97" in changed and str(cfg.evaluation.threshold) in changed
