"""The README's generated parts match what the code produces: the DAG diagrams and the config reference."""

from __future__ import annotations

import re

import pytest

from mlops.compile.compiler import compile_pipelines
from mlops.definition.graph import mermaid
from tests.project import PROJECT, ROOT, load_config

README = (ROOT / "README.md").read_text()
DIAGRAMS = re.findall(r"```mermaid\n(.*?)```", README, flags=re.S)


@pytest.mark.parametrize(
    "env, pipeline", [("local", "model-build"), ("local", "batch-score"), ("prod", "model-deploy")]
)
def test_each_pipeline_diagram_is_the_compiled_definitions(env, pipeline):
    drawn = mermaid(compile_pipelines(PROJECT, load_config(env)).definition(pipeline)).strip()
    assert drawn in [d.strip() for d in DIAGRAMS], f"README has no current diagram of {pipeline} ({env})"


def test_the_config_reference_is_generated_from_the_schema(capsys):
    from mlops.cli.main import main

    assert main(["config", "--reference"]) == 0
    reference = capsys.readouterr().out.strip()
    assert reference in README
