"""A CreateProcessingJob request run on this machine with SageMaker's processing-container contract.

Inputs are copied from the store to their ``LocalPath``; ``/opt/ml/config/{resourceconfig,
processingjobconfig}.json`` are written; ``InstanceCount`` instances run the entrypoint; outputs are
uploaded to their ``S3Uri`` only when every instance exited 0.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from mlops.local import arns
from mlops.local.runtime import sandbox
from mlops.local.runtime.common import (
    ML,
    JobRequestError,
    JobResult,
    LogCallback,
    base_env,
    check_host_count,
    container_path,
    disk_full_reason,
    failure_reason,
    get,
    host_names,
    job_warning,
    make_host_dirs,
    now,
    requirements_at,
    s3_objects,
    s3_uri,
    service_env,
    shard,
    stand_in,
    volume_bytes,
    write_json,
)
from mlops.local.s3store import S3Store, S3StoreError

log = logging.getLogger(__name__)


def _parse_inputs(request: dict) -> list[dict]:
    inputs = []
    for i, item in enumerate(get(request, "ProcessingInputs", list, [])):
        where = f"ProcessingInputs[{i}]"
        if not isinstance(item, dict):
            raise JobRequestError(f"{where} must be an object")
        if "S3Input" not in item:
            raise JobRequestError(f"{where} ({item.get('InputName')}): only S3Input is supported locally")
        s3 = item["S3Input"]
        mode = s3.get("S3InputMode", "File")
        if mode != "File":
            raise JobRequestError(f"{where}.S3Input.S3InputMode = {mode!r}: only File is supported locally")
        if s3.get("S3CompressionType", "None") not in ("None", None):
            raise JobRequestError(
                f"{where}.S3Input.S3CompressionType = {s3['S3CompressionType']!r} is not supported"
            )
        inputs.append(
            {
                "name": item.get("InputName", f"input-{i}"),
                "uri": s3_uri(get(s3, "S3Uri", str, where=where), f"{where}.S3Input.S3Uri"),
                "local": container_path(s3.get("LocalPath"), f"{where}.S3Input.LocalPath"),
                "type": s3.get("S3DataType", "S3Prefix"),
                "distribution": s3.get("S3DataDistributionType", "FullyReplicated"),
                "where": where,
            }
        )
    return inputs


def _parse_outputs(request: dict) -> list[dict]:
    outputs = []
    for i, item in enumerate(get(request, "ProcessingOutputConfig.Outputs", list, [])):
        where = f"ProcessingOutputConfig.Outputs[{i}]"
        if not isinstance(item, dict) or "S3Output" not in item:
            raise JobRequestError(f"{where}: only S3Output is supported locally")
        s3 = item["S3Output"]
        outputs.append(
            {
                "name": item.get("OutputName", f"output-{i}"),
                "uri": s3_uri(get(s3, "S3Uri", str, where=where), f"{where}.S3Output.S3Uri"),
                "local": container_path(s3.get("LocalPath"), f"{where}.S3Output.LocalPath"),
            }
        )
    return outputs


NO_COMMAND = (
    "AppSpecification.ContainerEntrypoint is missing: a processing image's own ENTRYPOINT is not known "
    "without the image; name the command to run"
)


def run_processing_job(
    request: dict,
    *,
    job_name: str,
    store: S3Store,
    job_dir: Path,
    on_log: LogCallback | None = None,
    cancel: threading.Event | None = None,
    file_systems: dict[str, str] | None = None,
    services: Any = None,
    images: dict[str, Any] | None = None,
) -> JobResult:
    """Runs one processing job to the end; raises :class:`JobRequestError` before starting on a bad request.

    ``images``: config ``local.images``, which environment stands in for which image."""
    count = get(request, "ProcessingResources.ClusterConfig.InstanceCount", int, 1)
    if count < 1:
        raise JobRequestError(f"ProcessingResources.ClusterConfig.InstanceCount = {count} must be >= 1")
    check_host_count(count, "ProcessingResources.ClusterConfig.InstanceCount")
    entrypoint = get(request, "AppSpecification.ContainerEntrypoint", list, None)
    if not entrypoint:
        raise JobRequestError(NO_COMMAND)
    argv = [str(a) for a in entrypoint + get(request, "AppSpecification.ContainerArguments", list, [])]
    inputs, outputs = _parse_inputs(request), _parse_outputs(request)
    user_env = {**service_env(services), **get(request, "Environment", dict, {})}
    base_env(user_env)  # the request's Environment is checked before anything is built
    max_runtime = get(request, "StoppingCondition.MaxRuntimeInSeconds", int, None)
    volume = volume_bytes(request, "ProcessingResources.ClusterConfig.VolumeSizeInGB")

    job_dir = Path(job_dir)
    hosts = make_host_dirs(job_dir, count)
    names = host_names(count)
    started = now()
    properties = {
        "ProcessingJobName": job_name,
        "ProcessingJobArn": arns.job_arn(request, "processing-job", job_name),
        **{k: v for k, v in request.items()},
        "ProcessingStartTime": started.isoformat(),
    }
    log_paths = [job_dir / f"{h.host}.log" for h in hosts]
    # FrameworkProcessor's runproc.sh unpacks the code input's sourcedir.tar.gz and pip-installs its
    # requirements.txt: installed here before the job, where an index is reachable.
    code = next((i["uri"] for i in inputs if i["uri"].endswith("sourcedir.tar.gz")), None)
    requirements = requirements_at(store, code) if code else None
    standin = stand_in(
        get(request, "AppSpecification.ImageUri", str, ""), images, log_paths, on_log, requirements
    )
    env = base_env(user_env, standin.environment.python)

    def finish(status: str, reason: str | None) -> JobResult:
        ended = now()
        reason = standin.hint(reason) if status == "Failed" else reason
        properties.update(
            ProcessingJobStatus=status,
            ProcessingEndTime=ended.isoformat(),
            LastModifiedTime=ended.isoformat(),
        )
        if reason:
            properties["FailureReason"] = reason
            properties["ExitMessage"] = reason
        return JobResult(status, reason, properties, {}, log_paths, job_dir)

    instances = []
    for index, h in enumerate(hosts):
        mounts = [sandbox.Mount(ML, h.ml), *standin.mounts]
        for item in inputs + outputs:
            host_dir = h.container_dir(item["local"])
            host_dir.mkdir(parents=True, exist_ok=True)
            if not item["local"].startswith(ML + "/") and item["local"] != ML:
                mounts.append(sandbox.Mount(item["local"], host_dir))
        for item in inputs:
            objects = s3_objects(store, item["uri"], item["type"], item["where"])
            if not objects:
                for lp in log_paths:
                    lp.touch()
                return finish(
                    "Failed", f"ClientError: no S3 objects found under {item['uri']} ({item['name']})"
                )
            mine = shard(objects, index, count, item["distribution"], item["where"])
            try:
                store.download_objects(mine, h.container_dir(item["local"]))
            except S3StoreError as err:
                for lp in log_paths:
                    lp.touch()
                return finish("Failed", f"ClientError: input {item['name']}: {err}")
        (h.ml / "output").mkdir(exist_ok=True)
        write_json(h.ml / "config" / "resourceconfig.json", {"current_host": h.host, "hosts": names})
        write_json(h.ml / "config" / "processingjobconfig.json", {"ProcessingJobName": job_name, **request})
        instances.append(
            sandbox.Instance(
                h.host, argv, env, mounts, cwd="/",
                declared_env=get(request, "Environment", dict, {}).keys(),
                instance_type=get(request, "ProcessingResources.ClusterConfig.InstanceType", str, None),
                layer=h.layer, volume=(h.root,), volume_bytes=volume,
            )
        )  # fmt: skip

    log.info("processing job %s: %d instance(s)", job_name, count)
    result = sandbox.run_group(
        instances,
        work_dir=job_dir / ".sandbox",
        log_paths=log_paths,
        on_line=(lambda host, _stream, line: on_log(host, line)) if on_log else None,
        cancel=cancel,
        max_runtime=max_runtime,
        bridges=services.bridges() if services else (),
    )
    if result.stopped:
        return finish("Stopped", "the job was stopped")
    if result.timed_out:
        return finish(
            "Failed", f"MaxRuntimeExceeded: the job ran longer than {max_runtime} s and was stopped"
        )
    if result.disk_full:
        return finish(
            "Failed", disk_full_reason(result.disk_full, "ProcessingResources.ClusterConfig.VolumeSizeInGB")
        )
    if any(result.exit_codes):
        reason = failure_reason("output/message", hosts, result.exit_codes, result.stderr_tail)
        return finish("Failed", reason)
    # Outputs are what the job left in its sandbox: walked without following a symlink (one in an output
    # is skipped with a warning in that host's log; a symlinked output dir fails the job).
    for item in outputs:
        for h, lp in zip(hosts, log_paths, strict=True):

            def skipped(rel: str, why: str, h=h, lp=lp, item=item) -> None:
                message = f"output {item['name']}: {item['local']}/{rel} skipped ({why})"
                job_warning(lp, h.host, message, on_log)

            try:
                store.put_tree(item["uri"], h.container_dir(item["local"]), base=h.root, on_skip=skipped)
            except S3StoreError as err:
                return finish(
                    "Failed",
                    f"ClientError: output {item['name']} ({item['local']} on {h.host}) not uploaded: {err}",
                )
    return finish("Completed", None)
