"""A model served for scoring by a job of the executor (Clarify's shadow endpoint): the model's own serving
runtime on sandboxed hosts, as a transform job serves it (:mod:`.transform`, :mod:`.serving`).

SageMaker Clarify starts a shadow endpoint of ``predictor.model_name`` and sends it the dataset's feature
rows; here :func:`served_model` starts ``InstanceCount`` sandboxed serving containers of the CreateModel
request (the same ``serving.prepare`` / ``serving.host`` / ``sandbox.run_group`` a transform job uses) and
yields a function that posts one batch to ``/invocations`` (hosts taken in turn) and returns the body.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlops.local.runtime import serving
from mlops.local.runtime.common import JobRequestError, make_host_dirs
from mlops.local.runtime.transform import (
    _invoker,
    model_container,
    start_serving_group,
)
from mlops.local.s3store import S3Store

Invoke = Callable[[bytes, str | None, str | None], bytes]


@contextmanager
def served_model(
    model: dict[str, Any],
    *,
    store: S3Store,
    job_dir: Path,
    instance_type: str | None = None,
    instance_count: int = 1,
    images: dict[str, Any] | None = None,
    services: Any = None,
    on_log=None,
    cancel: threading.Event | None = None,
    timeout_s: float = 600.0,
) -> Iterator[Invoke]:
    """``invoke(payload, content_type, accept) -> body`` against ``model`` (a CreateModel request) served on
    ``instance_count`` sandboxed hosts under ``job_dir``; the hosts stop when the block ends.

    Raises :class:`JobRequestError` when the model cannot be served or its server never answers ``/ping``;
    :class:`mlops.local.runtime.transform.ServingError` from ``invoke`` when it answers an error."""
    container = model_container(model)
    job_dir = Path(job_dir)
    hosts = make_host_dirs(job_dir, max(1, instance_count))
    log_paths = [job_dir / f"{h.host}.log" for h in hosts]
    model_dir = job_dir / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    if container.get("ModelDataUrl"):
        serving.unpack_model(store, container["ModelDataUrl"], model_dir)
    served = serving.prepare(
        container, model_dir, images=images, services=services, log_paths=log_paths, on_log=on_log,
        settings={"MAX_CONTENT_LENGTH": str(100 * 2**20)}, instance_type=instance_type, store=store,
    )  # fmt: skip
    serving_group = start_serving_group(
        served,
        hosts,
        job_dir=job_dir,
        log_paths=log_paths,
        on_log=on_log,
        cancel=cancel,
        name=f"scoring-{job_dir.name}",
    )
    stop, outcome, group = serving_group.stop, serving_group.outcome, serving_group.thread
    try:
        if not serving_group.ready():
            reason = serving_group.start_failure()
            if "error" in outcome:
                raise outcome["error"]
            raise JobRequestError(served.standin.hint(f"model {model.get('ModelName', '')!r}: {reason}"))
        invokers = itertools.cycle([_invoker(s, timeout_s) for s in serving_group.sockets])
        lock = threading.Lock()

        def invoke(payload: bytes, content_type: str | None, accept: str | None) -> bytes:
            with lock:
                call = next(invokers)
            return call(payload, content_type, accept)

        yield invoke
    finally:
        stop.set()
        group.join()
