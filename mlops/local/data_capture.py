"""Data capture for local endpoints: what SageMaker writes for an endpoint config's ``DataCaptureConfig``.

Each invocation through the sagemaker-runtime API (``mlops endpoints api``, the jobs' gateway) is sampled
at ``InitialSamplingPercentage``; a sampled one is written to the store as one JSON line in SageMaker's capture
format under ``<DestinationS3Uri>/<EndpointName>/<VariantName>/<yyyy>/<mm>/<dd>/<hh>/``: the request
(``CaptureMode: Input``) and the answer (``Output``) with their observed content types, as text when the
type is one of ``CaptureContentTypeHeader``'s CSV or JSON types (``text/csv``, ``application/json`` by
default) and base64 otherwise, an event id and the inference time. One object per invocation, written
whole (SageMaker batches several per object; a reader of the prefix, Model Monitor's or yours, sees the
same lines). Requests posted straight to an endpoint's port skip the API and are not captured.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from mlops.local.s3store import S3Store

log = logging.getLogger(__name__)

_DEFAULT_CSV = ("text/csv",)
_DEFAULT_JSON = ("application/json",)


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _encoded(data: bytes, content_type: str | None, header: dict) -> tuple[str, str]:
    media = _media(content_type)
    csv_types = [t.lower() for t in header.get("CsvContentTypes") or _DEFAULT_CSV]
    json_types = [t.lower() for t in header.get("JsonContentTypes") or _DEFAULT_JSON]
    try:
        if media in csv_types:
            return data.decode("utf-8"), "CSV"
        if media in json_types:
            return data.decode("utf-8"), "JSON"
    except UnicodeDecodeError:
        pass
    return base64.b64encode(data).decode("ascii"), "BASE64"


class DataCapture:
    """Writes the captured invocations of every local endpoint under ``home`` to its store."""

    def __init__(
        self, home: str | Path, store_root: Path | None = None, sample: Callable[[], float] = random.random
    ):
        self.store = S3Store(Path(store_root) if store_root else Path(home) / "s3")
        self.sample = sample

    def record(
        self, info, variant: str, request: tuple[bytes, str | None], response: tuple[bytes, str]
    ) -> str | None:
        """The URI written for this invocation, or None (no capture configured, not sampled, or a failure,
        which is logged: capture never fails an invocation)."""
        config = info.data_capture or {}
        if not config or not config.get("EnableCapture", True) or not config.get("DestinationS3Uri"):
            return None
        if self.sample() * 100 >= float(config.get("InitialSamplingPercentage", 100)):
            return None
        modes = {o.get("CaptureMode") for o in config.get("CaptureOptions") or [{"CaptureMode": "Input"},
                                                                                 {"CaptureMode": "Output"}]}  # fmt: skip
        header = config.get("CaptureContentTypeHeader") or {}
        capture = {}
        for mode, key, (data, content_type) in (
            ("Input", "endpointInput", request),
            ("Output", "endpointOutput", response),
        ):
            if mode in modes:
                text, encoding = _encoded(data, content_type, header)
                capture[key] = {"observedContentType": content_type or "", "mode": mode.upper(), "data": text,
                                "encoding": encoding}  # fmt: skip
        when = datetime.now(UTC)
        event = {
            "captureData": capture,
            "eventMetadata": {
                "eventId": str(uuid.uuid4()),
                "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "eventVersion": "0",
        }
        stamp = (
            when.strftime("%Y/%m/%d/%H") + "/" + when.strftime("%M-%S-") + f"{when.microsecond // 1000:03d}"
        )
        uri = f"{config['DestinationS3Uri'].rstrip('/')}/{info.name}/{variant}/{stamp}-{uuid.uuid4().hex[:8]}.jsonl"
        try:
            self.store.put_bytes(uri, (json.dumps(event) + "\n").encode())
        except Exception as err:  # the invocation already succeeded: a capture problem is only logged
            log.warning("data capture of %s not written to %s: %s", info.name, uri, err)
            return None
        return uri
