"""What SageMaker Model Monitor's analyzer image computes, computed here with pandas, numpy and scikit-learn.

A QualityCheck step runs that image as a processing job: it reads a dataset, writes ``statistics.json`` and
``constraints.json`` (the baseline, in Model Monitor's documented formats) and, when asked to check,
``constraint_violations.json``. The image does not run on this machine; this package stands in for it, apart
from the executor: ``dataset`` reads what ``dataset_format`` describes, ``data_quality`` and
``model_quality`` compute the baseline files and the violations of a dataset against a baseline.
"""

from __future__ import annotations

from mlops.errors import MlopsError


class MonitorError(MlopsError):
    """A dataset or baseline the analyzer cannot use: ``str(err)`` is one line naming the field or value."""


__all__ = ["MonitorError"]
