"""A CreateTrainingJob request run on this machine with SageMaker's training-container contract.

Each of ``InstanceCount`` hosts gets ``/opt/ml/input/config/{hyperparameters,resourceconfig,
inputdataconfig}.json`` as SageMaker writes them, its channels, the ``SM_*`` variables of the SageMaker
training toolkit and a checkpoints dir synced with ``CheckpointConfig.S3Uri``. The hosts share one private
network, so the SDK's torchrun driver rendezvouses at ``algo-1:7777`` as in the cloud. On success the
model dir of ``algo-1`` becomes ``<S3OutputPath>/<job>/output/model.tar.gz``.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops.local import arns
from mlops.local.images.launch import ImageLaunchError, hyperparameter, training_launch
from mlops.local.runtime import sandbox
from mlops.local.runtime.channels import Channel, deliver, parse_channels
from mlops.local.runtime.common import (
    METRIC_HISTORY_FILE,
    ML,
    JobRequestError,
    JobRequirements,
    JobResult,
    LogCallback,
    MetricParser,
    base_env,
    check_host_count,
    container_path,
    disk_full_reason,
    failure_reason,
    get,
    job_warning,
    make_host_dirs,
    now,
    requirements_at,
    s3_uri,
    service_env,
    stand_in,
    volume_bytes,
    write_json,
)
from mlops.local.runtime.instances import cpu_count
from mlops.local.s3store import S3Store, S3StoreError, SkipCallback, open_dir_nofollow, walk_nofollow

log = logging.getLogger(__name__)

GROUP = "homogeneousCluster"
MASTER_PORT = "7777"
# How often a running job's checkpoint dirs are copied into CheckpointConfig.S3Uri (SageMaker syncs them
# continuously), so that a job killed mid-way, executor and all, resumes from its last synced checkpoint.
CHECKPOINT_SYNC_S = float(os.environ.get("MLOPS_CHECKPOINT_SYNC_S", "3"))


class CheckpointSync:
    """Copies new or changed files of the hosts' checkpoint dirs into the store, in a thread and at the end.

    Each object is written atomically (the store's temp file + rename); files still being written under a
    temp name (``.name.*.tmp``) are left for the next pass. The job is running while this reads its dirs, so
    nothing is followed: each dir is reached from its base (default: its parent) by fd without a symlink,
    and symlinks or special files in it are skipped (``on_skip``, once per path), never dereferenced.
    """

    def __init__(
        self,
        store: S3Store,
        uri: str,
        dirs: list[Path],
        interval: float | None = None,
        *,
        bases: list[Path] | None = None,
        on_skip: Callable[[int, str, str], None] | None = None,
    ):
        self.store, self.uri, self.dirs = store, uri.rstrip("/"), dirs
        self.bases = bases if bases is not None else [Path(d).parent for d in dirs]
        self.on_skip = on_skip
        self.interval = CHECKPOINT_SYNC_S if interval is None else interval
        self.seen: dict[Path, tuple[int, int]] = {}
        self.warned: set[tuple[int, str]] = set()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)

    def __enter__(self) -> CheckpointSync:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.sync()

    def _loop(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.sync()
            except Exception:  # a failed pass is retried on the next one and at the end
                log.warning("checkpoint sync to %s failed", self.uri, exc_info=True)

    def _skip(self, index: int, rel: str, why: str) -> None:
        if (index, rel) in self.warned:
            return
        self.warned.add((index, rel))
        if self.on_skip is not None:
            self.on_skip(index, rel, why)
        else:
            log.warning("checkpoint sync to %s: skipped %s (%s)", self.uri, rel, why)

    def sync(self) -> int:
        copied = 0
        with self.lock:
            for index, (root, base) in enumerate(zip(self.dirs, self.bases, strict=True)):
                try:
                    top = open_dir_nofollow(base, root)
                except S3StoreError as err:
                    if Path(root).exists() or Path(root).is_symlink():
                        self._skip(index, ".", f"not synced: {err}")
                    continue
                try:
                    for rel, dir_fd, name in walk_nofollow(top, lambda r, w, i=index: self._skip(i, r, w)):
                        if name.startswith(".") and name.endswith(".tmp"):
                            continue
                        try:
                            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        except FileNotFoundError:  # replaced between the walk and now
                            continue
                        path = Path(root) / rel
                        stamp = (st.st_mtime_ns, st.st_size)
                        if self.seen.get(path) == stamp:
                            continue
                        try:
                            self.store.put_opened(f"{self.uri}/{rel}", name, dir_fd)
                        except S3StoreError as err:  # gone, or swapped for a symlink since the walk
                            self._skip(index, rel, str(err))
                            continue
                        self.seen[path] = stamp
                        copied += 1
                finally:
                    os.close(top)
        return copied


def _submit_requirements(store: S3Store, hps: dict, channels: list[Channel]) -> JobRequirements | None:
    """The ``requirements.txt`` of ``sagemaker_submit_directory`` (an S3 tarball or prefix, or a dir of a
    File channel, as the toolkit accepts), which the image's toolkit installs before the entry point."""
    submit = hyperparameter(hps, "sagemaker_submit_directory")
    if not submit:
        return None
    if submit.startswith("s3://"):
        return requirements_at(store, submit)
    rel = os.path.relpath(submit, f"{ML}/input/data")
    name, _, rest = rel.partition("/")
    channel = next((c for c in channels if c.name == name and c.uri and c.data_type == "S3Prefix"), None)
    if rel.startswith("..") or channel is None:
        return None
    return requirements_at(store, f"{channel.uri.rstrip('/')}/{rest}".rstrip("/"))


_REMOTE_FUNCTION_DRIVER = "sagemaker_remote_function_bootstrap/job_driver.sh"
_REMOTE_FUNCTION_DEPENDENCIES = "pre_exec_script_and_dependencies"


def _remote_function_requirements(store: S3Store, argv: list[str], channels: list[Channel]):
    """The dependency file of an SDK remote function (``@remote``, a pipeline's ``@step``), which its job's
    bootstrap pip-installs from the ``pre_exec_script_and_dependencies`` channel before the function."""
    if not any(a.endswith(_REMOTE_FUNCTION_DRIVER) for a in argv[:3]):
        return None
    settings = {}
    if "--dependency_settings" in argv[:-1]:
        try:
            settings = json.loads(argv[argv.index("--dependency_settings") + 1])
        except (ValueError, TypeError):
            return None  # the bootstrap itself says what is wrong with it
    name = settings.get("dependency_file") if isinstance(settings, dict) else None
    channel = next((c for c in channels if c.name == _REMOTE_FUNCTION_DEPENDENCIES and c.uri), None)
    if not isinstance(name, str) or not name.endswith(".txt") or channel is None or "/" in name:
        return None  # a conda environment.yml is the image's conda's business
    return requirements_at(store, f"{channel.uri.rstrip('/')}/{name}")


def _instance_groups(request: dict) -> list[tuple[str, str, int]]:
    """``(group name, instance type, count)``; a plain ResourceConfig is SageMaker's homogeneous group."""
    groups = get(request, "ResourceConfig.InstanceGroups", list, None)
    if groups:
        out = []
        for i, g in enumerate(groups):
            where = f"ResourceConfig.InstanceGroups[{i}]"
            out.append(
                (
                    get(g, "InstanceGroupName", str, where=where),
                    get(g, "InstanceType", str, where=where),
                    get(g, "InstanceCount", int, where=where),
                )
            )
            check_host_count(out[-1][2], f"{where}.InstanceCount")
        check_host_count(sum(g[2] for g in out), "ResourceConfig.InstanceGroups (all groups)")
        return out
    count = get(request, "ResourceConfig.InstanceCount", int, 1)
    if count < 1:
        raise JobRequestError(f"ResourceConfig.InstanceCount = {count} must be >= 1")
    check_host_count(count, "ResourceConfig.InstanceCount")
    return [(GROUP, get(request, "ResourceConfig.InstanceType", str, "local"), count)]


def _resource_configs(groups: list[tuple[str, str, int]]) -> list[dict]:
    hosts, membership = [], []
    for name, itype, count in groups:
        for _ in range(count):
            hosts.append(f"algo-{len(hosts) + 1}")
            membership.append((name, itype))
    instance_groups = [
        {
            "instance_group_name": n,
            "instance_type": t,
            "hosts": [h for h, m in zip(hosts, membership, strict=True) if m[0] == n],
        }
        for n, t, _ in groups
    ]
    return [
        {
            "current_host": host,
            "current_instance_type": itype,
            "current_group_name": group,
            "hosts": hosts,
            "instance_groups": instance_groups,
            "network_interface_name": "eth0",
        }
        for host, (group, itype) in zip(hosts, membership, strict=True)
    ]


def _num_gpus() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def _hp_value(raw: str):
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


def training_env(
    job_name: str,
    job_arn: str,
    rc: dict,
    channels: list[Channel],
    hps: dict[str, str],
    ckpt_dir: str,
    num_gpus: int,
) -> dict[str, str]:
    """The ``SM_*`` variables that the SageMaker training toolkit sets (container paths)."""
    data_dir = f"{ML}/input/data"
    hps_parsed = {k: _hp_value(v) for k, v in hps.items()}
    channel_dirs = {c.name: f"{data_dir}/{c.name}" for c in channels}
    input_data_config = {c.name: c.config for c in channels}
    hosts = rc["hosts"]
    group_hosts = next(
        g["hosts"] for g in rc["instance_groups"] if g["instance_group_name"] == rc["current_group_name"]
    )
    common = {
        "current_host": rc["current_host"],
        "current_instance_type": rc["current_instance_type"],
        "hosts": hosts,
        "network_interface_name": rc["network_interface_name"],
        "hyperparameters": hps_parsed,
        "channel_input_dirs": channel_dirs,
        "input_data_config": input_data_config,
        "resource_config": rc,
        "job_name": job_name,
        "model_dir": f"{ML}/model",
        "output_dir": f"{ML}/output",
        "output_data_dir": f"{ML}/output/data",
        "output_intermediate_dir": f"{ML}/output/intermediate",
        "input_dir": f"{ML}/input",
        "input_config_dir": f"{ML}/input/config",
        "input_data_dir": data_dir,
        "num_cpus": cpu_count(rc["current_instance_type"]),
        "num_gpus": num_gpus,
        "num_neurons": 0,
        "master_addr": hosts[0],
        "master_port": int(MASTER_PORT),
        "is_master": rc["current_host"] == hosts[0],
        "log_level": 20,
    }
    user_args = [x for k, v in hps.items() for x in (f"--{k}", str(v))]
    env = {
        "TRAINING_JOB_NAME": job_name,
        "TRAINING_JOB_ARN": job_arn,
        "SM_HOSTS": json.dumps(hosts),
        "SM_HOST_COUNT": str(len(hosts)),
        "SM_CURRENT_HOST": rc["current_host"],
        "SM_CURRENT_HOST_RANK": str(hosts.index(rc["current_host"])),
        "SM_CURRENT_INSTANCE_TYPE": rc["current_instance_type"],
        "SM_CURRENT_INSTANCE_GROUP": rc["current_group_name"],
        "SM_CURRENT_INSTANCE_GROUP_HOSTS": json.dumps(group_hosts),
        "SM_INSTANCE_GROUPS": json.dumps([g["instance_group_name"] for g in rc["instance_groups"]]),
        "SM_IS_HETERO": json.dumps(len(rc["instance_groups"]) > 1),
        "SM_NETWORK_INTERFACE_NAME": rc["network_interface_name"],
        "SM_MASTER_ADDR": hosts[0],
        "SM_MASTER_PORT": MASTER_PORT,
        "SM_CHANNELS": json.dumps(sorted(channel_dirs)),
        "SM_HPS": json.dumps(hps_parsed),
        "SM_USER_ARGS": json.dumps(user_args),
        "SM_MODEL_DIR": f"{ML}/model",
        "SM_INPUT_DIR": f"{ML}/input",
        "SM_INPUT_CONFIG_DIR": f"{ML}/input/config",
        "SM_INPUT_DATA_DIR": data_dir,
        "SM_OUTPUT_DIR": f"{ML}/output",
        "SM_OUTPUT_DATA_DIR": f"{ML}/output/data",
        "SM_OUTPUT_INTERMEDIATE_DIR": f"{ML}/output/intermediate",
        "SM_OUTPUT_FAILURE": f"{ML}/output/failure",
        "SM_CHECKPOINT_DIR": ckpt_dir,
        "SM_NUM_CPUS": str(common["num_cpus"]),
        "SM_NUM_GPUS": str(num_gpus),
        "SM_NUM_NEURONS": "0",
        "SM_LOG_LEVEL": "20",
        "SM_RESOURCE_CONFIG": json.dumps(rc),
        "SM_INPUT_DATA_CONFIG": json.dumps(input_data_config),
        "SM_TRAINING_ENV": json.dumps(common),
    }
    for name, path in channel_dirs.items():
        env[f"SM_CHANNEL_{name.upper()}"] = path
    for key, value in hps_parsed.items():
        env[f"SM_HP_{key.replace('-', '_').upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


def _tar_gz(src_dir: Path, dest: Path, on_link: SkipCallback | None = None) -> None:
    """A reproducible tar.gz of ``src_dir``'s contents (members relative, mtime and owners zeroed).

    Nothing is followed: a symlink becomes a link member (``on_link`` is told), never the file it names;
    a directory behind a symlink is not entered.
    """

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    paths = []
    for dirpath, dirnames, filenames in os.walk(src_dir, followlinks=False):
        paths += [Path(dirpath) / n for n in dirnames + filenames]
    with open(dest, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=6) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, dereference=False) as tar:
            for path in sorted(paths):
                rel = path.relative_to(src_dir).as_posix()
                if path.is_symlink() and on_link is not None:
                    on_link(rel, f"a symlink to {os.readlink(path)!r}, kept as a link and not followed")
                tar.add(path, arcname=rel, recursive=False, filter=clean)


def _upload_tar(
    store: S3Store, src_dir: Path, uri: str, tmp_dir: Path, base: Path | None = None, on_link=None
) -> None:
    """``src_dir`` (reached from ``base`` without a symlink, else S3StoreError) as a tar.gz at ``uri``."""
    os.close(open_dir_nofollow(base if base is not None else src_dir.parent, src_dir))
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, suffix=".tar.gz")
    os.close(fd)
    try:
        _tar_gz(src_dir, Path(tmp), on_link)
        store.put_file(uri, Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)


def run_training_job(
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
    """Runs one training job to the end; raises :class:`JobRequestError` before starting on a bad request.

    ``images``: config ``local.images``, which environment stands in for which image."""
    algo = get(request, "AlgorithmSpecification", dict)
    get(algo, "ContainerEntrypoint", list, None, where="AlgorithmSpecification")
    get(algo, "ContainerArguments", list, [], where="AlgorithmSpecification")
    definitions = get(algo, "MetricDefinitions", list, [], where="AlgorithmSpecification")
    hps = {k: str(v) for k, v in get(request, "HyperParameters", dict, {}).items()}
    try:
        launch = training_launch(algo, hps)
    except ImageLaunchError as err:
        raise JobRequestError(str(err)) from err
    argv = launch.argv
    # A built-in algorithm's own definitions when the request names none, as SageMaker attaches them.
    metrics = MetricParser(definitions or launch.metric_definitions)
    channels = parse_channels(request, file_systems)
    rcs = _resource_configs(_instance_groups(request))
    output_path = get(request, "OutputDataConfig.S3OutputPath", str).rstrip("/")
    s3_uri(output_path, "OutputDataConfig.S3OutputPath")
    ckpt_uri = get(request, "CheckpointConfig.S3Uri", str, None)
    if ckpt_uri is not None:
        s3_uri(ckpt_uri, "CheckpointConfig.S3Uri")
    ckpt_local = container_path(
        get(request, "CheckpointConfig.LocalPath", str, f"{ML}/checkpoints"), "CheckpointConfig.LocalPath"
    )
    max_runtime = get(request, "StoppingCondition.MaxRuntimeInSeconds", int, None)
    volume = volume_bytes(request, "ResourceConfig.VolumeSizeInGB")
    user_env = {**service_env(services), **get(request, "Environment", dict, {})}
    num_gpus = _num_gpus()

    job_dir = Path(job_dir)
    hosts = make_host_dirs(job_dir, len(rcs))
    log_paths = [job_dir / f"{h.host}.log" for h in hosts]
    history_path = job_dir / METRIC_HISTORY_FILE  # every metric value, read back by the runs store
    history_path.unlink(missing_ok=True)
    requirements = (
        _submit_requirements(store, hps, channels)
        if launch.kind == "framework"
        else _remote_function_requirements(store, launch.argv, channels)
    )
    standin = stand_in(get(algo, "TrainingImage", str, "", where="AlgorithmSpecification"), images, log_paths,
                       on_log, requirements)  # fmt: skip
    started = now()
    model_uri = f"{output_path}/{job_name}/output/model.tar.gz"
    properties = {
        "TrainingJobName": job_name,
        "TrainingJobArn": arns.job_arn(request, "training-job", job_name),
        **{k: v for k, v in request.items()},
        "TrainingStartTime": started.isoformat(),
    }

    def finish(status: str, reason: str | None, secondary: str) -> JobResult:
        ended = now()
        properties.update(
            TrainingJobStatus=status,
            SecondaryStatus=secondary,
            TrainingEndTime=ended.isoformat(),
            LastModifiedTime=ended.isoformat(),
            TrainingTimeInSeconds=int((ended - started).total_seconds()),
            BillableTimeInSeconds=int((ended - started).total_seconds()),
            FinalMetricDataList=metrics.final_list(),
        )
        reason = standin.hint(reason) if status == "Failed" else reason
        if reason:
            properties["FailureReason"] = reason
        for lp in log_paths:
            lp.touch()
        return JobResult(status, reason, properties, dict(metrics.values), log_paths, job_dir)

    instances, feeders = [], []
    mode = sandbox.sandbox_mode()
    try:
        for index, (h, rc) in enumerate(zip(hosts, rcs, strict=True)):
            for sub in ("model", "output/data", "output/intermediate", "input/config", "code"):
                (h.ml / sub).mkdir(parents=True, exist_ok=True)
            ckpt_dir = h.container_dir(ckpt_local)
            ckpt_dir.mkdir(parents=True, exist_ok=True)
            if ckpt_uri:
                store.download(ckpt_uri, ckpt_dir)
            extra_mounts, pipes = deliver(channels, store, h.ml, index, len(hosts))
            feeders += pipes
            cfg = h.ml / "input" / "config"
            write_json(cfg / "resourceconfig.json", rc)
            write_json(cfg / "inputdataconfig.json", {c.name: c.config for c in channels})
            env = base_env(
                {
                    **training_env(
                        job_name, properties["TrainingJobArn"], rc, channels, hps, ckpt_local, num_gpus
                    ),
                    **user_env,
                },
                standin.environment.python,
            )
            env.update({k: v for k, v in launch.env.items() if k not in user_env})
            if mode == sandbox.NONE and launch.kind == "framework":
                # no /etc/hosts of the job's own: algo-N never resolves, and the toolkit would wait 15 min for
                # it; its switch for the SDK's local mode skips that wait
                env.setdefault("SM_STUDIO_LOCAL_MODE", "true")
            mounts = [sandbox.Mount(ML, h.ml), *extra_mounts, *standin.mounts]
            mounts += [sandbox.Mount(target, source, read_only=True) for target, source in launch.mounts]
            if not ckpt_local.startswith(ML + "/"):
                mounts.append(sandbox.Mount(ckpt_local, ckpt_dir))
            # Without namespaces a container path in a hyperparameter (sagemaker_submit_directory: the code
            # channel's /opt/ml/input/data/code) is mapped like one in an argument, for the toolkit reads it.
            rewrite = sandbox.path_rewriter(mounts) if mode == sandbox.NONE else str
            write_json(cfg / "hyperparameters.json", {k: rewrite(v) for k, v in hps.items()})
            instances.append(
                sandbox.Instance(
                    h.host, argv, env, mounts, cwd="/",
                    declared_env=get(request, "Environment", dict, {}).keys(),
                    instance_type=rc["current_instance_type"],
                    layer=h.layer, volume=(h.root,), volume_bytes=volume,
                )
            )  # fmt: skip
    except (JobRequestError, S3StoreError) as err:
        for f in feeders:
            f.close()
        return finish("Failed", f"ClientError: {err}", "Failed")

    def on_line(host: str, _stream: str, line: str) -> None:
        metrics.feed(line, host)
        if on_log is not None:
            on_log(host, line)

    log.info("training job %s: %d host(s)", job_name, len(hosts))
    for f in feeders:
        f.thread.start()

    # SageMaker syncs checkpoints while the job runs and whatever the outcome, so that a restarted job
    # resumes; without a CheckpointConfig there is nothing to sync.
    def ckpt_skipped(index: int, rel: str, why: str) -> None:
        job_warning(
            log_paths[index], hosts[index].host, f"checkpoint {ckpt_local}/{rel} skipped ({why})", on_log
        )

    syncing = (
        CheckpointSync(
            store,
            ckpt_uri,
            [h.container_dir(ckpt_local) for h in hosts],
            bases=[h.root for h in hosts],
            on_skip=ckpt_skipped,
        )  # fmt: skip
        if ckpt_uri
        else contextlib.nullcontext()
    )
    metrics.record_to(history_path)
    try:
        with syncing:
            result = sandbox.run_group(
                instances,
                work_dir=job_dir / ".sandbox",
                log_paths=log_paths,
                on_line=on_line,
                cancel=cancel,
                max_runtime=max_runtime,
                bridges=services.bridges() if services else (),
            )
    finally:
        metrics.close()
        for f in feeders:
            f.stop.set()
        for f in feeders:
            f.thread.join(timeout=5)
        for f in feeders:
            f.close()
    if result.stopped:
        return finish("Stopped", "the job was stopped", "Stopped")
    if result.timed_out:
        reason = f"MaxRuntimeExceeded: the job ran longer than {max_runtime} s and was stopped"
        return finish("Failed", reason, "MaxRuntimeExceeded")
    if result.disk_full:
        return finish("Failed", disk_full_reason(result.disk_full, "ResourceConfig.VolumeSizeInGB"), "Failed")
    if any(result.exit_codes):
        reason = failure_reason("output/failure", hosts, result.exit_codes, result.stderr_tail)
        return finish("Failed", reason, "Failed")
    pipe_errors = [f.error for f in feeders if f.error]
    if pipe_errors:
        return finish("Failed", f"ClientError: {pipe_errors[0]}", "Failed")
    master = hosts[0]

    def linked(what: str):
        return lambda rel, why: job_warning(log_paths[0], master.host, f"{what}/{rel}: {why}", on_log)

    try:
        _upload_tar(store, master.ml / "model", model_uri, job_dir, master.root, linked(f"{ML}/model"))
        properties["ModelArtifacts"] = {"S3ModelArtifacts": model_uri}
        data_dir = master.ml / "output" / "data"
        os.close(open_dir_nofollow(master.root, data_dir))
        if any(data_dir.iterdir()):
            _upload_tar(
                store, data_dir, f"{output_path}/{job_name}/output/output.tar.gz", job_dir, master.root,
                linked(f"{ML}/output/data"),
            )  # fmt: skip
    except S3StoreError as err:
        return finish(
            "Failed", f"ClientError: {master.host}: model or output data not uploaded: {err}", "Failed"
        )
    return finish("Completed", None, "Completed")
