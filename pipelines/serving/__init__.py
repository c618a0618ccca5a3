"""Local endpoints with SageMaker's serving contract.

- ``server``: the model server (starlette + uvicorn workers) for an unpacked ``model.tar.gz``;
- ``front``: the reverse proxy that owns an endpoint's public port, so versions can change behind it;
- ``supervisor``: start/stop/list/logs/invoke and blue/green deployment of those processes;
- ``commands``: the ``mlops endpoints ...`` CLI.
"""
