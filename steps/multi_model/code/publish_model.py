"""Copy an approved model package's artifact under a multi-model endpoint's ModelDataUrl prefix.

A multi-model endpoint's container (``Mode: MultiModel``) serves the ``model.tar.gz`` archives under one S3
prefix; a request's ``TargetModel`` is an archive's key below it. This job reads the version's artifact
(DescribeModelPackage: its inference container's ``ModelDataUrl``) and copies it to
``<prefix><target>`` (``v<version>.tar.gz``), then writes ``target_model.json`` (the step's property file):
``{"TargetModel": ..., "ModelDataUrl": ..., "Source": ...}``. A key already there is replaced, as a
re-run of the same version publishes the same artifact again. Fails with one line.

    python3 publish_model.py --model-package-arn ARN --prefix s3://bucket/multi-model/group/
"""

from __future__ import annotations

import argparse
import json
import os
import sys

OUTPUT_DIR = "/opt/ml/processing/output/target_model"
OUTPUT_FILE = "target_model.json"
FAILURE_FILE = "/opt/ml/output/message"


class PublishError(Exception):
    pass


def target_model(package_arn: str) -> str:
    """``arn:...:model-package/<group>/<version>`` -> ``v<version>.tar.gz``, the key TargetModel names."""
    _, _, resource = package_arn.partition(":model-package/")
    group, _, version = resource.partition("/")
    if not group or not version.isdigit():
        raise PublishError(f"ModelPackageArn {package_arn!r} is not a versioned model package ARN")
    return f"v{version}.tar.gz"


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise PublishError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


def artifact_of(described: dict) -> str:
    containers = (described.get("InferenceSpecification") or {}).get("Containers") or []
    url = containers[0].get("ModelDataUrl") if containers else None
    if not url:
        raise PublishError(f"model package {described.get('ModelPackageArn')}: no ModelDataUrl to publish")
    return url


def publish(package_arn: str, prefix: str, sagemaker, s3) -> dict:
    if not prefix.endswith("/"):
        raise PublishError(f"--prefix {prefix!r} must end with '/' (a ModelDataUrl prefix)")
    target = target_model(package_arn)
    described = sagemaker.describe_model_package(ModelPackageName=package_arn)
    if described.get("ModelApprovalStatus") != "Approved":
        raise PublishError(
            f"model package {package_arn} is {described.get('ModelApprovalStatus')}, not Approved"
        )
    source = artifact_of(described)
    src_bucket, src_key = split_s3(source)
    bucket, key_prefix = split_s3(prefix)
    s3.copy({"Bucket": src_bucket, "Key": src_key}, bucket, f"{key_prefix}{target}")
    return {"TargetModel": target, "ModelDataUrl": prefix, "Source": source, "ModelPackageArn": package_arn}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-package-arn", required=True)
    parser.add_argument("--prefix", required=True, help="the multi-model ModelDataUrl prefix (s3://.../)")
    args = parser.parse_args(argv)
    import boto3
    from botocore.exceptions import ClientError

    try:
        result = publish(args.model_package_arn, args.prefix, boto3.client("sagemaker"), boto3.client("s3"))
    except (PublishError, ClientError) as exc:
        os.makedirs(os.path.dirname(FAILURE_FILE), exist_ok=True)
        with open(FAILURE_FILE, "w") as handle:
            handle.write(f"publish to the multi-model prefix failed: {exc}")
        print(exc, file=sys.stderr)
        return 1
    os.makedirs(OUTPUT_DIR, exist_ok=True)
    with open(os.path.join(OUTPUT_DIR, OUTPUT_FILE), "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
