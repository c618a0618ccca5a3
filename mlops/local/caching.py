"""Step caching (CacheConfig): the key of a job's work, expiry, and whether a hit's outputs still exist."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from mlops.errors import DefinitionError

# Request sections that name where a job writes, not what it reads: they stay out of the input digests.
_OUTPUT_KEYS = {
    "ProcessingOutputConfig",
    "OutputDataConfig",
    "CheckpointConfig",
    "DebugHookConfig",
    "TensorBoardOutputConfig",
    "ProfilerConfig",
    "DebugRuleConfigurations",
    "ProfilerRuleConfigurations",
}


def parse_duration(text: str) -> timedelta:
    """ISO 8601 ``P30D`` / ``PT1H`` / ``P1Y2M`` or the SDK's short ``30d`` / ``12h`` / ``45m`` / ``2w`` forms.

    Months are 30 days and years 365, as caching needs no more.
    """
    if not isinstance(text, str):
        raise DefinitionError(f"CacheConfig ExpireAfter {text!r} is not a duration string")
    short = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if short:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[short.group(2)]
        return timedelta(**{unit: int(short.group(1))})
    m = re.fullmatch(
        r"P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?",
        text or "",
    )
    if not m or text in ("P", "PT"):
        raise DefinitionError(f"CacheConfig ExpireAfter {text!r} is not an ISO 8601 duration")
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return timedelta(days=365 * y + 30 * mo + 7 * w + d, hours=h, minutes=mi, seconds=s)


# ------------------------------------------------------------------------------------------------ running


def input_uris(request: Any, key: str | None = None) -> set[str]:
    if key in _OUTPUT_KEYS:
        return set()
    if isinstance(request, Mapping):
        found: set[str] = set()
        for k, v in request.items():
            found |= input_uris(v, k)
        return found
    if isinstance(request, list):
        return set().union(*(input_uris(v, key) for v in request)) if request else set()
    if isinstance(request, str) and request.startswith("s3://"):
        return {request}
    return set()


# --------------------------------------------------------------------------------------------------- API
