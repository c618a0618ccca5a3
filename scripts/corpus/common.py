"""What every corpus entry script shares: the fake account, the helpers that replace notebook-only calls.

Entry scripts run under the SDK their example was written for (v2: ``.venv-sdkv2``, v3: ``.venv``), in a
work directory prepared by ``build.py``, with every AWS call pointed at a local moto server. Nothing here
imports the SageMaker SDK at module level, so both SDK generations can import it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REGION = "us-east-1"
ACCOUNT = "111122223333"  # an AWS documentation account id, never a real one
ROLE = f"arn:aws:iam::{ACCOUNT}:role/SageMakerRole"
BUCKET = "sagemaker-corpus"


FIXED_EPOCH = 1704067200.123  # 2024-01-01T00:00:00.123Z


def freeze() -> None:
    """Make the SDK's generated names reproducible: a stopped clock and a seeded ``uuid.uuid4``.

    The SDK stamps job names (``name_from_base``), the pipeline build time and some S3 prefixes with the
    time or a uuid4 while it builds a definition; with these fixed, the same script gives the same bytes.
    Call it before importing sagemaker.
    """
    import logging
    import random
    import time
    import uuid

    time.time = lambda: FIXED_EPOCH
    time.time_ns = lambda: int(FIXED_EPOCH * 1000) * 1_000_000
    gmtime, localtime, strftime = time.gmtime, time.localtime, time.strftime
    time.gmtime = lambda secs=None: gmtime(FIXED_EPOCH if secs is None else secs)
    time.localtime = lambda secs=None: localtime(FIXED_EPOCH if secs is None else secs)
    time.strftime = lambda fmt, t=None: strftime(fmt, localtime(FIXED_EPOCH) if t is None else t)
    rng = random.Random(20240101)
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)
    logging.basicConfig(level=logging.ERROR)
    _pin_endpoints()


def _pin_endpoints() -> None:
    """Clients the SDK builds with an explicit AWS endpoint (its regional STS endpoint) go to the local
    moto server too: botocore's AWS_ENDPOINT_URL does not override an explicit ``endpoint_url``."""
    import boto3.session

    local = os.environ.get("AWS_ENDPOINT_URL")
    if not local:
        raise SystemExit("run this through scripts/corpus/build.py (AWS_ENDPOINT_URL is not set)")
    for name in ("client", "resource"):
        original = getattr(boto3.session.Session, name)

        def pinned(self, *args, _original=original, **kwargs):
            if "amazonaws.com" in str(kwargs.get("endpoint_url") or ""):
                kwargs["endpoint_url"] = local
            return _original(self, *args, **kwargs)

        setattr(boto3.session.Session, name, pinned)


def get_execution_role(*_args, **_kwargs) -> str:
    """Stands in for ``sagemaker.get_execution_role()``, which only works inside SageMaker."""
    return ROLE


def write_definition(pipeline) -> None:
    """The definition exactly as the SDK serialized it, re-indented (key order and values untouched)."""
    text = pipeline.definition()
    data = json.loads(text)
    Path(os.environ["CORPUS_DEFINITION"]).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
