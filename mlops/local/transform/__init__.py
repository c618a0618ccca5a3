"""The data plane of a SageMaker batch transform job, independent of how the model is served.

SageMaker's CreateTransformJob turns S3 objects into HTTP requests and the responses back into
``<key>.out`` objects. The rules for that (how objects split into records, how records batch into
requests under ``MaxPayloadInMB``, how ``DataProcessing`` filters and joins records, how responses
assemble) are what make a local run trustworthy, so they live here, apart from serving, S3 and the
executor: ``records`` splits and batches, ``filters`` applies ``DataProcessing``, ``job`` drives a
whole job through a caller-supplied ``invoke`` function.
"""

from __future__ import annotations

from mlops.errors import MlopsError


class TransformError(MlopsError):
    """A transform job that cannot run or fails: ``str(err)`` is one line naming the field, value or
    object (and record) at fault."""


__all__ = ["TransformError"]
