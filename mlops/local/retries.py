"""Which failures a RetryPolicy covers, and how long to wait before the next attempt.

As on SageMaker, a policy covers only faults of the platform itself: here the local runtime's own
infrastructure, raised as :class:`mlops.local.records.RuntimeFault` with the ExceptionType it stands for.
A job's own error is never retried, whatever its text says, and neither is a request the runtime refuses
or an OSError caused by the job's input.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from mlops.local.records import RuntimeFault


def classify_failure(err: BaseException | None) -> str | None:
    """The RetryPolicies ExceptionType a failure belongs to, or None when it is not retryable."""
    return err.exception_type if isinstance(err, RuntimeFault) else None


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
