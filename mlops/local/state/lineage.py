"""A model version's lineage, as the local home records it: the execution that registered it, its
parameters, the code bundles its definition names and the data its steps wrote."""

from __future__ import annotations

import json
import re
from typing import Any

from mlops.local.state.home import Home

_BUNDLE = re.compile(r"s3://[^\"\s]+/code/(?P<name>[^/\"\s]+)/(?P<hash>[0-9a-f]{16,})/?")


def code_bundles(definition: dict[str, Any] | str | None) -> dict[str, str]:
    """``{bundle name: content hash}`` from the ``.../code/<name>/<sha256>/`` URIs a definition names."""
    text = definition if isinstance(definition, str) else json.dumps(definition or {})
    return {m.group("name"): m.group("hash") for m in _BUNDLE.finditer(text)}


def data_outputs(home: Home, execution_id: str) -> dict[str, str]:
    """``{"Step.output": S3 URI}`` of every processing output the execution wrote (what its data lineage is)."""
    found: dict[str, str] = {}
    for step in home.runs.steps(execution_id):
        outputs = ((step.get("properties") or {}).get("ProcessingOutputConfig") or {}).get("Outputs") or []
        for out in outputs:
            uri = (out.get("S3Output") or {}).get("S3Uri")
            if uri and out.get("OutputName"):
                found[f"{step['name']}.{out['OutputName']}"] = uri
    return found


def lineage(home: Home, package: dict[str, Any]) -> dict[str, Any]:
    """``execution_id``, ``input_data_uri``, ``data_outputs``, ``code_bundles`` of a registry row and, when
    its execution is still in the home, ``pipeline_name``, ``execution_status`` and ``parameters``."""
    found: dict[str, Any] = {"execution_id": package.get("execution_id"), "input_data_uri": None,
                             "data_outputs": {}, "code_bundles": {}}  # fmt: skip
    execution = home.runs.get(package["execution_id"]) if package.get("execution_id") else None
    if execution:
        found["pipeline_name"] = execution["pipeline_name"]
        found["execution_status"] = execution["status"]
        found["parameters"] = execution["parameters"]
        found["input_data_uri"] = (execution["parameters"] or {}).get("InputDataUri")
        found["code_bundles"] = code_bundles(execution["definition"])
        found["data_outputs"] = data_outputs(home, execution["id"])
    return found
