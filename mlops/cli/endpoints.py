"""``mlops endpoints ...``: list, start, invoke, logs and stop local endpoints (wired in by ``mlops.cli.main``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from mlops.cli.console import err, out, print_json
from mlops.cli.invocation import add_home
from mlops.serving import supervisor


def register(subparsers: argparse._SubParsersAction) -> None:
    endpoints = subparsers.add_parser("endpoints", help="local endpoints (SageMaker serving contract)")
    sub = endpoints.add_subparsers(dest="endpoints_command", required=True, metavar="COMMAND")

    def add(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_home(p)
        p.set_defaults(func=handler)
        return p

    p = add("list", _list, "list local endpoints and whether their processes are alive")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")

    p = add("show", _show, "one endpoint: versions, ports, deployment history")
    p.add_argument("name", help="endpoint name (mlops endpoints list)")
    p.add_argument("--format", choices=["table", "json"], default="table", help="output format")

    p = add("start", _start, "serve a model dir (unpacked model.tar.gz) as a local endpoint")
    p.add_argument("name", help="endpoint name to serve under")
    p.add_argument("--model-dir", required=True, type=Path, help="the model dir (an unpacked model.tar.gz)")
    p.add_argument("--port", type=int, default=8080, help="public port on 127.0.0.1 (default 8080)")
    p.add_argument("--workers", type=int, default=2, help="model server worker processes (default 2)")
    p.add_argument("--version", help="version label (default: the model dir's name)")
    p.add_argument(
        "--async-output", metavar="S3_URI",
        help="take InvokeEndpointAsync too (mlops endpoints api), answers under this S3OutputPath",
    )  # fmt: skip
    p.add_argument("--async-failure", metavar="S3_URI", help="with --async-output: S3FailurePath for errors")
    p.add_argument("--async-concurrency", type=int, metavar="N", help="MaxConcurrentInvocationsPerInstance")
    p.add_argument(
        "--success-topic", metavar="ARN", help="with --async-output: NotificationConfig SuccessTopic"
    )
    p.add_argument("--error-topic", metavar="ARN", help="with --async-output: NotificationConfig ErrorTopic")
    p.add_argument(
        "--capture", metavar="S3_URI", help="capture what the sagemaker-runtime API passes, under this prefix"
    )
    p.add_argument(
        "--capture-percent", type=int, default=100, metavar="N", help="with --capture: sampling (100)"
    )

    p = add("invoke", _invoke, "POST a payload file to an endpoint's /invocations and print the answer")
    p.add_argument("name", help="endpoint name (mlops endpoints list)")
    p.add_argument("--data", required=True, type=Path, help="payload file ('-' for stdin)")
    p.add_argument("--content-type", default="application/json", help="default application/json")
    p.add_argument("--accept", help="response type (default: the server's, JSON)")

    p = add("logs", _logs, "print the last lines of an endpoint's log")
    p.add_argument("name", help="endpoint name (mlops endpoints list)")
    p.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default: 50)")
    p.add_argument("--source", choices=["front", *supervisor.VARIANTS], help="default: the active version")

    p = add("stop", _stop, "stop an endpoint's processes (its record and logs stay)")
    p.add_argument("name", help="endpoint name (mlops endpoints list)")

    p = add(
        "api", _api,
        "serve the sagemaker-runtime API (InvokeEndpoint...), the sagemaker API's model, endpoint-config, "
        "endpoint and transform-job calls and Application Auto Scaling, for boto3 and the AWS CLI",
    )  # fmt: skip
    p.add_argument("--port", type=int, default=API_PORT, help=f"port on 127.0.0.1 (default {API_PORT})")
    p.add_argument(
        "--images", type=Path, metavar="FILE.yaml",
        help="which environment stands in for which image (config local.images' form), for CreateModel's images",
    )  # fmt: skip
    p.add_argument(
        "--mme-memory-mb", type=int, metavar="MB",
        help="memory of each multi-model instance for its loaded models (default: its instance type's)",
    )  # fmt: skip
    p.add_argument(
        "--scaling-period-s", type=float, default=60.0, metavar="S",
        help="how long one of CloudWatch's minutes lasts for the scaling policies (default 60)",
    )  # fmt: skip

    p = add("notifications", _notifications, "print the messages an async endpoint sent to a topic")
    p.add_argument("topic", help="the topic's ARN (or name), as in NotificationConfig")

    p = add("url", _url, "print what an application exports to reach the local endpoints with boto3")
    p.add_argument("--port", type=int, default=API_PORT, help=f"the api's port (default {API_PORT})")


API_PORT = 8090


# botocore's service-specific endpoint variables, each pointed at the one local API
_SERVICE_VARS = ("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", "AWS_ENDPOINT_URL_SAGEMAKER",
                 "AWS_ENDPOINT_URL_APPLICATION_AUTO_SCALING")  # fmt: skip


def _export_line(port: int) -> str:
    return "\n".join(f"export {var}=http://127.0.0.1:{port}" for var in _SERVICE_VARS)


def _url(args) -> int:
    sys.stdout.write(_export_line(args.port) + "\n")
    err().print(
        f"# with `mlops endpoints api --port {args.port}` running, boto3.client('sagemaker-runtime')"
        ".invoke_endpoint(EndpointName=...) reaches the local endpoint of that name, and boto3.client("
        "'sagemaker') / ('application-autoscaling') the local models, endpoints and scaling policies",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    return 0


def _api(args) -> int:
    import threading

    from mlops.cli.run import read_images
    from mlops.local.async_inference import AsyncQueue
    from mlops.local.data_capture import DataCapture
    from mlops.local.hosting import autoscaling_api
    from mlops.local.hosting.autoscaling import Scaler
    from mlops.local.hosting.control_plane import ControlPlane
    from mlops.local.hosting.endpoints import LocalHosting
    from mlops.local.runtime.transform import run_transform_job
    from mlops.local.s3store import S3Store
    from mlops.serving.runtime_api import RuntimeApiServer

    home = Path(args.home_root)
    images = read_images(args.images) if args.images else {}
    store = S3Store(home / "s3")
    hosting = LocalHosting(home, store, images=images, mme_memory_mb=args.mme_memory_mb)
    queue = AsyncQueue(home, hosting=hosting)
    hosting.backlog = queue.backlog
    control = ControlPlane(home, hosting, store, transform_runner=run_transform_job)
    services = {
        "SageMaker": control.handle,
        "AnyScaleFrontendService": lambda target, body: autoscaling_api.handle(
            home, target, body, capacity=hosting
        ),
    }
    try:
        api = RuntimeApiServer(
            home, args.port, backend=queue, capture=DataCapture(home), hosting=hosting, services=services
        )
    except OSError as error:
        hosting.close()
        raise supervisor.EndpointError(
            f"--port {args.port}: cannot listen on 127.0.0.1 ({error.strerror})"
        ) from None
    stop = threading.Event()
    scaler = Scaler(home, hosting.metric, hosting, period_s=args.scaling_period_s)
    threading.Thread(target=scaler.run, args=(stop,), name="mlops-autoscaling", daemon=True).start()
    sys.stdout.write(_export_line(api.port) + "\n")
    sys.stdout.flush()
    err().print(
        f"sagemaker-runtime, sagemaker and application-autoscaling APIs on {api.url} (Ctrl-C stops it; "
        "the endpoints CreateEndpoint made stop with it and come back at the next `mlops endpoints api`)",
        highlight=False, soft_wrap=True,
    )  # fmt: skip
    try:
        api.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        queue.close()
        control.close()
        hosting.close()
    return 0


def _status_style(status: str) -> str:
    return {"InService": "green", "Failed": "red", "RolledBack": "red"}.get(status, "yellow")


def _list(args) -> int:
    from mlops.local.hosting.endpoints import recorded_endpoints

    endpoints = supervisor.list_endpoints(home=args.home_root)
    hosted = recorded_endpoints(args.home_root)
    if args.format == "json":
        print_json([e.to_json() for e in endpoints] + [{"kind": "hosted", **h} for h in hosted])
        return 0
    if not endpoints and not hosted:
        out().print("no local endpoints")
        return 0
    if endpoints:
        table = Table(title="local endpoints")
        for col in ("name", "status", "url", "version", "variant", "workers", "started"):
            table.add_column(col, no_wrap=col in ("name", "status", "url"))
        for e in endpoints:
            a = e.active
            table.add_row(
                e.name,
                f"[{_status_style(e.status)}]{e.status}[/]",
                e.url,
                a.version if a else "-",
                a.variant if a else "-",
                str(a.workers) if a else "-",
                e.started_at,
            )
        out().print(table)
    if hosted:
        table = Table(title="endpoints CreateEndpoint made (served by mlops endpoints api)")
        for col in ("name", "status", "variants (model, weight, instances)", "containers"):
            table.add_column(col, no_wrap=col in ("name", "status"))
        for h in hosted:
            variants = ", ".join(
                f"{v['VariantName']} ({v['ModelName']}, {v['Weight']:g}, {v['InstanceCount']})"
                for v in h["variants"]
            )
            table.add_row(h["name"], f"[{_status_style(h['status'])}]{h['status']}[/]", variants,
                          str(h["running_containers"]))  # fmt: skip
        out().print(table)
    return 0


def _show(args) -> int:
    e = supervisor.get_endpoint(args.name, home=args.home_root)
    if args.format == "json":
        print_json(e.to_json())
        return 0
    console = out()
    console.print(f"[bold]{e.name}[/] [{_status_style(e.status)}]{e.status}[/] {e.url}")
    if e.active:
        a = e.active
        console.print(
            f"active: {a.version} ({a.variant}) pid {a.process.pid} port {a.port}, model {a.model_dir}"
        )
    table = Table(title="deployments")
    for col in ("at", "version", "variant", "status", "reason"):
        table.add_column(col)
    for d in e.deployments:
        table.add_row(d.at, d.version, d.variant, f"[{_status_style(d.status)}]{d.status}[/]", d.reason)
    console.print(table)
    return 0


def _start(args) -> int:
    console = err()
    with console.status(f"starting {args.name} ({args.workers} workers) on port {args.port} ..."):
        e = supervisor.start_endpoint(
            args.name,
            args.model_dir,
            args.port,
            home=args.home_root,
            workers=args.workers,
            version=args.version,
            async_config=_async_config(args),
            data_capture=_data_capture(args),
        )
    out().print(f"[green]{e.name}[/] InService at {e.url} (version {e.active.version})")
    return 0


def _async_config(args) -> dict | None:
    """AsyncInferenceConfig from ``start``'s flags, checked before anything starts."""
    extra = [
        f for f in ("async_failure", "async_concurrency", "success_topic", "error_topic") if getattr(args, f)
    ]
    if not args.async_output:
        if extra:
            raise supervisor.EndpointError(f"--{extra[0].replace('_', '-')} needs --async-output")
        return None
    for flag in ("async_output", "async_failure"):
        value = getattr(args, flag)
        if value and not value.startswith("s3://"):
            raise supervisor.EndpointError(f"--{flag.replace('_', '-')} {value!r}: give an s3:// URI")
    if args.async_concurrency is not None and not 1 <= args.async_concurrency <= 1000:
        raise supervisor.EndpointError(f"--async-concurrency {args.async_concurrency}: give 1 to 1000")
    output: dict = {"S3OutputPath": args.async_output}
    if args.async_failure:
        output["S3FailurePath"] = args.async_failure
    topics = {k: v for k, v in (("SuccessTopic", args.success_topic), ("ErrorTopic", args.error_topic)) if v}
    if topics:
        output["NotificationConfig"] = topics
    config: dict = {"OutputConfig": output}
    if args.async_concurrency:
        config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": args.async_concurrency}
    return config


def _data_capture(args) -> dict | None:
    if not args.capture:
        return None
    if not args.capture.startswith("s3://"):
        raise supervisor.EndpointError(f"--capture {args.capture!r}: give an s3:// URI")
    if not 0 <= args.capture_percent <= 100:
        raise supervisor.EndpointError(f"--capture-percent {args.capture_percent}: give 0 to 100")
    return {
        "EnableCapture": True,
        "InitialSamplingPercentage": args.capture_percent,
        "DestinationS3Uri": args.capture,
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }


def _notifications(args) -> int:
    from mlops.local.async_inference import read_topic

    try:
        messages = read_topic(args.home_root, args.topic)
    except ValueError as error:
        raise supervisor.EndpointError(str(error)) from None
    for message in messages:
        sys.stdout.write(json.dumps(message) + "\n")
    return 0


def _read_payload(path: Path) -> bytes:
    if str(path) == "-":
        return sys.stdin.buffer.read()
    try:
        return path.read_bytes()
    except OSError as err:
        raise supervisor.EndpointError(f"--data {path}: {err.strerror}") from err


def _invoke(args) -> int:
    result = supervisor.invoke(
        args.name, _read_payload(args.data), args.content_type, accept=args.accept, home=args.home_root
    )
    text = result.body.decode("utf-8", errors="replace")
    if result.status >= 400:
        err().print(f"[red]error:[/red] HTTP {result.status}: {text}", highlight=False, soft_wrap=True)
        return 1
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _logs(args) -> int:
    if args.lines < 1:
        raise supervisor.EndpointError(f"-n {args.lines}: give a positive number of lines")
    for line in supervisor.endpoint_logs(
        args.name, home=args.home_root, lines=args.lines, source=args.source
    ):
        print(line)
    return 0


def _stop(args) -> int:
    e = supervisor.stop_endpoint(args.name, home=args.home_root)
    out().print(f"{e.name} stopped")
    return 0
