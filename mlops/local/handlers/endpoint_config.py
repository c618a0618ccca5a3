"""EndpointConfig: recorded in the home for the Endpoint step that names it."""

from __future__ import annotations

from mlops.definition.expressions import resolve
from mlops.errors import MlopsError
from mlops.local.handlers.endpoint import create_endpoint_config
from mlops.local.records import Outcome


class EndpointConfigHandler:
    def run(self, step, execution) -> Outcome:
        request = resolve(step.arguments, execution.context())
        try:
            return Outcome.succeeded(create_endpoint_config(execution.home, request, prefix=execution.prefix))
        except MlopsError as err:
            return Outcome.failed(str(err), properties={})
