"""``mlops mlflow url | log [EXECUTION] | stop``: the local MLflow server over the home, and local executions
logged to it (``mlops run`` logs each one itself when config ``tracking.mlflow.enabled`` is true).

Named for what it does, not ``mlflow.py``: a module beside the ``mlflow`` package it uses."""

from __future__ import annotations

import argparse
import importlib.util
import os

from mlops.cli.console import err, escape, out, print_json
from mlops.cli.invocation import Invocation, add_env, add_format, add_home

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"


def register(sub: argparse._SubParsersAction) -> None:
    mlflow = sub.add_parser("mlflow", help="the local MLflow tracking server and runs logged to it")
    group = mlflow.add_subparsers(dest="mlflow_command", required=True, metavar="COMMAND")
    url = group.add_parser("url", help="the local MLflow server's URL (started when none is running)")
    url.add_argument(
        "--no-start", action="store_true", help="print the URL only of a running server; exit 1 when none is"
    )
    add_home(url)
    add_format(url)
    url.set_defaults(func=cmd_url)
    log = group.add_parser(
        "log", help="log a local execution to MLflow (as mlops run does when tracking.mlflow.enabled)"
    )
    log.add_argument(
        "execution", nargs="?", default="latest", metavar="EXECUTION",
        help="execution id, a unique prefix of one, or 'latest' (default)",
    )  # fmt: skip
    add_env(log)
    add_home(log)
    log.set_defaults(func=cmd_log)
    stop = group.add_parser("stop", help="stop the local MLflow server (its runs stay in <home>/mlflow/)")
    add_home(stop)
    stop.set_defaults(func=cmd_stop)


def cmd_url(args: Invocation) -> int:
    from mlops.local.tracking.mlflow_server import ensure_server, running

    if args.no_start:
        info = running(args.home_root)
        if info is None:
            err().print(f"[red]no MLflow server is running for {escape(str(args.home_root))}[/]")
            return 1
    else:
        info = ensure_server(args.home_root, on_progress=_progress)
    if args.format == "json":
        print_json({"uri": info.uri, "pid": info.pid, "port": info.port,
                    "backend_store_uri": info.backend_store_uri,
                    "artifacts_destination": info.artifacts_destination})  # fmt: skip
    else:
        out().print(info.uri, highlight=False)
    return 0


def cmd_log(args: Invocation) -> int:
    from mlops.local.tracking.mlflow_runs import log_execution

    home = args.local_home
    execution_id = home.runs.resolve(args.execution)
    settings = args.config.tracking.mlflow
    experiment = settings.experiment_name(args.config.project.name, args.config.env)
    logged = log_execution(
        home, execution_id, tracking_uri=tracking_uri(args), experiment=experiment,
        log_model=settings.log_model,
    )  # fmt: skip
    verb = "already logged" if logged.reused else "logged"
    out().print(f"{verb} {execution_id} to MLflow: {logged.url()}", highlight=False)
    return 0


def cmd_stop(args: Invocation) -> int:
    from mlops.local.tracking.mlflow_server import stop_server

    info = stop_server(args.home_root)
    if info is None:
        out().print(f"no MLflow server recorded for {args.home_root}", highlight=False)
    else:
        out().print(f"stopped the MLflow server on {info.uri} (pid {info.pid})", highlight=False)
    return 0


def tracking_uri(args: Invocation) -> str:
    """``$MLFLOW_TRACKING_URI``, else config ``tracking.mlflow.tracking_uri``, else the home's local server
    (started when none answers)."""
    from mlops.local.tracking.mlflow_runs import TrackingError
    from mlops.local.tracking.mlflow_server import ensure_server, healthy

    if importlib.util.find_spec("mlflow") is None:
        raise TrackingError("mlflow is not installed (it comes with the 'local' extra)")
    uri = os.environ.get(TRACKING_URI_ENV) or args.config.tracking.mlflow.tracking_uri
    if not uri:
        return ensure_server(args.home_root, on_progress=_progress).uri
    if uri.startswith(("http://", "https://")) and not healthy(uri, timeout_s=5):
        # the client would retry for minutes before saying so
        raise TrackingError(f"the MLflow tracking server {uri} does not answer /health")
    return uri


def log_run(args: Invocation, execution_id: str) -> None:
    """``mlops run``'s end: log the execution when config ``tracking.mlflow.enabled``; a failure is one
    warning line, never the run's."""
    if args.optional_project is None or not args.config.tracking.mlflow.enabled:
        return
    from mlops.local.tracking.mlflow_runs import log_execution

    settings = args.config.tracking.mlflow
    try:
        logged = log_execution(
            args.local_home, execution_id, tracking_uri=tracking_uri(args),
            experiment=settings.experiment_name(args.config.project.name, args.config.env),
            log_model=settings.log_model,
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 (tracking is optional: the run's outcome stands)
        reason = " ".join(str(error).split()) or type(error).__name__
        err().print(
            f"[yellow]warning:[/] execution {execution_id} not logged to MLflow: {escape(reason[:300])}"
        )
        return
    out().print(f"MLflow: {logged.url()}", highlight=False)


def _progress(line: str) -> None:
    err().print(line, highlight=False)
