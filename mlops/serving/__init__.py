"""Local endpoints with SageMaker's serving contract.

- ``server``: the model server (starlette + uvicorn workers) for an unpacked ``model.tar.gz``;
- ``front``: the reverse proxy that owns an endpoint's public port, so versions can change behind it;
- ``supervisor``: start/stop/list/logs/invoke and blue/green deployment of those processes;
- ``commands``: the ``mlops endpoints ...`` CLI.
"""

# Shared by the server and its supervisor; kept here so the CLI need not import the web stack.
CANNOT_SERVE = "cannot serve:"
READY_DIR_ENV = "MLOPS_READY_DIR"
