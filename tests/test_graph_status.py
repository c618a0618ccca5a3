"""``mlops.definition.graph`` with an execution's statuses: Mermaid classes and Graphviz colours."""

from __future__ import annotations

import shutil

import pytest

from mlops.definition.graph import dot, mermaid, render_picture

DEFINITION = {
    "Version": "2020-12-01",
    "Steps": [
        {"Name": "Prep", "Type": "Processing", "Arguments": {}},
        {"Name": "Train", "Type": "Training", "Arguments": {}, "DependsOn": ["Prep"]},
        {"Name": "Eval", "Type": "Processing", "Arguments": {}, "DependsOn": ["Train"]},
        {"Name": "Push", "Type": "Processing", "Arguments": {}, "DependsOn": ["Eval"]},
        {"Name": "Tidy", "Type": "Processing", "Arguments": {}, "DependsOn": ["Prep"]},
    ],
}
STATUSES = {"Prep": "Succeeded", "Train": "Failed", "Eval": "NotExecuted", "Tidy": "Executing"}


def test_without_statuses_the_graph_is_as_before():
    text = mermaid(DEFINITION)
    assert "classDef" not in text and "class " not in text
    assert 'Prep["Prep<br/><small>Processing</small>"]' in text
    assert "fillcolor" not in dot(DEFINITION)


def test_each_status_is_a_class_and_a_cache_hit_is_marked():
    text = mermaid(DEFINITION, STATUSES, cached={"Prep"})
    lines = text.splitlines()
    assert '    Prep["Prep<br/><small>Processing · cache hit</small>"]' in lines
    assert '    Train[["Train<br/><small>Training · Failed</small>"]]' in lines
    assert '    Push["Push<br/><small>Processing · not run</small>"]' in lines
    assert "    class Prep cached" in lines
    assert "    class Train failed" in lines
    assert "    class Eval,Push notrun" in lines  # NotExecuted, and a step with no record at all
    assert "    class Tidy executing" in lines
    defs = [line.split()[1] for line in lines if line.startswith("    classDef ")]
    assert sorted(defs) == ["cached", "executing", "failed", "notrun"]  # only the classes used
    assert "stroke-dasharray" in next(line for line in lines if "classDef cached" in line)


def test_the_picture_has_the_same_colours(tmp_path):
    text = dot(DEFINITION, STATUSES, cached={"Prep"})
    assert (
        'Train [label="Train\\n(Training)\\nFailed", shape=box3d, style="rounded,filled", fillcolor="#f8d4d4"'
        in text
    )
    assert 'style="rounded,filled,dashed"' in text  # the cache hit
    if shutil.which("dot") is None:
        pytest.skip("graphviz is not installed")
    svg = render_picture(DEFINITION, tmp_path / "g.svg", STATUSES, {"Prep"}).read_text()
    assert 'fill="#f8d4d4"' in svg and 'fill="#d4e4f8"' in svg and "stroke-dasharray" in svg
