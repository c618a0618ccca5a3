"""Resolve the model package version a batch-score run scores with: the one given, else the latest Approved.

A run started by EventBridge Scheduler carries no ModelPackageArn, so this job asks SageMaker's model
registry when the run executes (ListModelPackages: the group's Approved versions, newest first). A run
started by ``mlops start`` or ``mlops run`` carries the ARN its start resolved by the same rule (against
SageMaker's registry or the local one); it is written through unchanged, after checking that it names a
version of the group. Writes ``model_package.json`` (the step's property file) or fails with one line.

    python3 resolve_model.py --model-package-group NAME [--model-package-arn ARN]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

OUTPUT_DIR = "/opt/ml/processing/output/model_package"
OUTPUT_FILE = "model_package.json"
FAILURE_FILE = "/opt/ml/output/message"
APPROVED = "Approved"


class ResolveError(Exception):
    pass


def no_approved_message(group: str) -> str:
    """The one line both the start (``mlops run``/``mlops start``) and this job give when nothing is Approved."""
    return (
        f"model package group {group} has no Approved version to score with: approve one first "
        f"(mlops models approve {group}/VERSION --reason ...)"
    )


def group_of(arn: str) -> str | None:
    """``arn:aws:sagemaker:R:A:model-package/<group>/<version>`` -> group (None if not a versioned ARN)."""
    _, _, resource = arn.partition(":model-package/")
    group, _, version = resource.partition("/")
    return group if group and version.isdigit() else None


def latest_approved(client, group: str) -> dict:
    """The group's newest Approved version (a ListModelPackages summary)."""
    response = client.list_model_packages(
        ModelPackageGroupName=group,
        ModelApprovalStatus=APPROVED,
        SortBy="CreationTime",
        SortOrder="Descending",
        MaxResults=1,
    )
    summaries = response.get("ModelPackageSummaryList") or []
    if not summaries:
        raise ResolveError(no_approved_message(group))
    return summaries[0]


def resolve(group: str, given: str, client_factory) -> dict:
    if given:
        if group_of(given) != group:
            raise ResolveError(f"ModelPackageArn {given!r} is not a version of model package group {group}")
        return {"ModelPackageArn": given, "ModelPackageGroupName": group, "ResolvedBy": "start"}
    summary = latest_approved(client_factory(), group)
    return {
        "ModelPackageArn": summary["ModelPackageArn"],
        "ModelPackageGroupName": group,
        "ModelPackageVersion": summary.get("ModelPackageVersion"),
        "ResolvedBy": "registry",
    }


def _client():
    import boto3

    return boto3.client("sagemaker")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-package-group", required=True)
    parser.add_argument("--model-package-arn", default="", help="empty: the group's latest Approved version")
    args = parser.parse_args(argv)
    try:
        resolved = resolve(args.model_package_group, args.model_package_arn.strip(), _client)
    except ResolveError as exc:
        os.makedirs(os.path.dirname(FAILURE_FILE), exist_ok=True)
        with open(FAILURE_FILE, "w") as handle:
            handle.write(str(exc))
        print(exc, file=sys.stderr)
        return 1
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(OUTPUT_DIR, OUTPUT_FILE), "w") as handle:
        json.dump(resolved, handle, indent=2)
    print(json.dumps(resolved), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
