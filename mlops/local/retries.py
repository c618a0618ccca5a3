"""Which failures a RetryPolicy covers, and how long to wait before the next attempt."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

# How a local job failure maps onto the ExceptionType names of RetryPolicies. Anything else is the
# algorithm's own error, which SageMaker does not retry either.
FAILURE_CLASSES = (
    ("SageMaker.CAPACITY_ERROR", re.compile(r"capacity", re.I)),
    ("SageMaker.RESOURCE_LIMIT", re.compile(r"resource ?limit|ResourceLimitExceeded|quota exceeded", re.I)),
    ("Step.THROTTLING", re.compile(r"throttl|rate exceeded|too many requests|SlowDown", re.I)),
    ("SageMaker.JOB_INTERNAL_ERROR", re.compile(r"internal ?(server ?)?error|InternalFailure", re.I)),
    ("Step.SERVICE_FAULT", re.compile(r"service ?fault|ServiceUnavailable", re.I)),
)


def classify_failure(reason: str | None) -> str | None:
    """The RetryPolicies ExceptionType a failure reason belongs to, or None when it is not retryable."""
    for name, pattern in FAILURE_CLASSES:
        if reason and pattern.search(reason):
            return name
    return None


# ------------------------------------------------------------------------------------------------ records



def retry_delay(policies: list[Mapping[str, Any]], error_class: str | None, attempt: int, since: float):
    """Seconds to wait before the next attempt, or None when no policy covers this failure any more."""
    if not error_class:
        return None
    for policy in policies:
        if error_class not in (policy.get("ExceptionType") or []):
            continue
        interval = float(policy.get("IntervalSeconds", 1))
        rate = float(policy.get("BackoffRate", 2.0))
        delay = interval * rate ** (attempt - 1)
        if "MaxAttempts" in policy and attempt > int(policy["MaxAttempts"]):
            continue
        if "ExpireAfterMin" in policy and time.monotonic() + delay - since > 60 * float(
            policy["ExpireAfterMin"]
        ):
            continue
        return delay
    return None
