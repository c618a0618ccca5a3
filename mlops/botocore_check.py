"""One way to check a request against botocore's service model, before anything is sent."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def problems(service: str, operation: str, params: dict[str, Any]) -> list[str]:
    """botocore's own ParamValidator findings for ``params``, one readable line each (empty when valid)."""
    from botocore.validate import ParamValidator

    shape = service_model(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    if not report.has_errors():
        return []
    return [line.strip() for line in report.generate_report().splitlines() if line.strip()]
