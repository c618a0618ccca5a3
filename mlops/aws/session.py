"""boto3 clients built from config, and the translation of AWS failures into one-line MlopsErrors.

Retries use botocore's *standard* mode (exponential backoff with jitter on throttling and transient
errors), so a throttled call is retried before a user ever sees it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)

from mlops.errors import MlopsError

log = logging.getLogger(__name__)

# Attempts per call (the first one included); MLOPS_AWS_MAX_ATTEMPTS overrides it for impatient CI jobs.
DEFAULT_MAX_ATTEMPTS = 6
USER_AGENT = "mlops-digits"

ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError"}
THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "ProvisionedThroughputExceededException",
}
BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
}
NOT_FOUND = {
    "ResourceNotFound",
    "ResourceNotFoundException",
    "NoSuchEntity",
    "NoSuchBucket",
    "NoSuchKey",
    "404",
}
# "User: arn:... is not authorized to perform: sagemaker:CreatePipeline on resource: arn:..."
_DENIED = re.compile(r"not authorized to perform:? (?P<action>[\w:*-]+)(?: on resource:? (?P<resource>\S+))?")


class AwsError(MlopsError):
    """An AWS call failed in a way the user can act on; ``str()`` says what and where."""

    exit_code = 1


class AwsNotFound(AwsError):
    """The named AWS resource does not exist (in this account and region)."""


class AwsAccessDenied(AwsError):
    """The caller's identity may not perform the named action on the named resource."""


class AwsThrottled(AwsError):
    """AWS kept throttling after every retry."""


class AwsCredentialsError(AwsError):
    """No usable credentials were found."""


class Aws:
    """Lazily created, cached boto3 clients for one region, with standard-mode retries."""

    def __init__(self, region: str, *, session: boto3.Session | None = None, max_attempts: int | None = None):
        self.region = region
        self.session = session or boto3.Session(region_name=region)
        attempts = max_attempts or int(os.environ.get("MLOPS_AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
        self.config = BotoConfig(
            region_name=region,
            retries={"mode": "standard", "total_max_attempts": attempts},
            user_agent_extra=USER_AGENT,
        )
        self.max_attempts = attempts
        self._clients: dict[str, object] = {}

    @classmethod
    def from_config(cls, cfg, **kwargs) -> Aws:
        check_region(cfg.aws.region)
        return cls(cfg.aws.region, **kwargs)

    def client(self, service: str):
        if service not in self._clients:
            self._clients[service] = self.session.client(service, config=self.config)
        return self._clients[service]

    @property
    def sagemaker(self):
        return self.client("sagemaker")

    @property
    def s3(self):
        return self.client("s3")


def check_region(region: str, service: str = "sagemaker") -> None:
    """Fail early on a region botocore knows no endpoint for (typo, or a service not offered there)."""
    session = boto3.Session()
    known = set()
    for partition in session.get_available_partitions():
        known.update(session.get_available_regions(service, partition_name=partition))
    if known and region not in known:
        raise AwsError(
            f"aws.region {region!r}: {service} is not offered in that region (check the spelling in config/)"
        )


def translate(exc: Exception, action: str, resource: str) -> MlopsError:
    """Turn a botocore exception into the one line a user should read."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AwsCredentialsError(
            f"no AWS credentials found for {action}: set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "or run where an IAM role is attached"
        )
    if isinstance(exc, NoRegionError):
        return AwsError(f"{action}: no AWS region set (aws.region in config/)")
    if isinstance(exc, EndpointConnectionError):
        return AwsError(
            f"{action}: cannot reach {exc.kwargs.get('endpoint_url', 'the AWS endpoint')}; "
            "check aws.region in config/ and the network"
        )
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        message = " ".join(str(err.get("Message", "")).split())
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ACCESS_DENIED or status == 403 and code not in BAD_CREDENTIALS:
            m = _DENIED.search(message)
            denied_action = m.group("action") if m else action
            denied_resource = (m.group("resource") if m and m.group("resource") else None) or resource
            return AwsAccessDenied(
                f"access denied: {denied_action} on {denied_resource} (grant it to the calling role)"
            )
        if code in THROTTLED:
            attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
            return AwsThrottled(
                f"AWS throttled {action} on {resource} ({attempts} attempts with backoff); try again later"
            )
        if code in BAD_CREDENTIALS:
            return AwsCredentialsError(
                f"AWS rejected the credentials for {action} ({code}): refresh or replace them"
            )
        if code in NOT_FOUND or status == 404 or _looks_missing(code, message):
            return AwsNotFound(f"not found: {resource} ({action}: {message or code})")
        return AwsError(f"{action} on {resource} failed: {code}: {message}".rstrip(": "))
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{action} on {resource} failed: {exc}")
    return AwsError(f"{action} on {resource} failed: {type(exc).__name__}: {exc}")


def _looks_missing(code: str, message: str) -> bool:
    # SageMaker reports a missing pipeline or execution as a ValidationException with this wording.
    lowered = message.lower()
    return code == "ValidationException" and ("does not exist" in lowered or "could not find" in lowered)


@contextmanager
def aws_call(action: str, resource: str) -> Iterator[None]:
    """``with aws_call("sagemaker:CreatePipeline", name): ...`` re-raises AWS failures as MlopsErrors."""
    try:
        yield
    except MlopsError:
        raise
    except (BotoCoreError, ClientError) as exc:
        raise translate(exc, action, resource) from exc


def git_commit(root: Path) -> str:
    """The checked-out commit, or "unknown" outside a git work tree (e.g. an unpacked source tarball)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"
