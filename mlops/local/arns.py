"""ARNs for local resources, taken from what the definition names: locally there is no account."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

_ROLE = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/")
_ECR = re.compile(r"(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com")
_ARN = re.compile(r"arn:aws[a-z-]*:[a-z0-9-]+:([a-z]{2}(?:-[a-z]+)+-\d):(\d{12}):")
PLACEHOLDER_ACCOUNT = "0" * 12  # an obvious placeholder, not an account


def arn_prefix(definition: Mapping[str, Any]) -> str:
    """``arn:aws:sagemaker:<region>:<account>`` taken from the roles, images and ARNs the definition names.

    Locally there is no account: the definition is the only honest source. Without one we fall back to
    ``AWS_REGION`` and a placeholder account rather than inventing a real-looking one.
    """
    text = json.dumps(definition)
    account = region = None
    if m := _ROLE.search(text):
        account = m.group(1)
    if m := _ECR.search(text):
        account, region = account or m.group(1), m.group(2)
    if m := _ARN.search(text):
        region, account = region or m.group(1), account or m.group(2)
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "local"
    return f"arn:aws:sagemaker:{region}:{account or PLACEHOLDER_ACCOUNT}"


def job_arn(request: Mapping[str, Any], kind: str, job_name: str) -> str:
    """``arn:aws:sagemaker:<region>:<account>:<kind>/<name>`` from the job request's role (and images)."""
    return f"{arn_prefix(request)}:{kind}/{job_name.lower()}"
