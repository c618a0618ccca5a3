"""SageMaker Clarify's analysis, locally: what the Clarify processing image computes from
``analysis_config.json`` and the dataset, written as its documented ``analysis.json``.

- :mod:`.analysis`: the analysis configuration and the dataset (CSV) as the label, facets and features;
- :mod:`.bias`: pre-training (data) and post-training (model) bias metrics, by their documented formulas;
- :mod:`.explain`: global SHAP values (the ``shap`` library's KernelExplainer, as Clarify's Kernel SHAP);
- :mod:`.drift`: the drift check against a baseline ``analysis.json`` (Model Monitor's documented rules).

The ClarifyCheck step's handler (:mod:`mlops.local.handlers.clarify_check`) ties them to the model served
by the local runtime (:mod:`mlops.local.runtime.scoring`).
"""

from __future__ import annotations

from mlops.errors import MlopsError


class ClarifyError(MlopsError):
    """The analysis configuration or the dataset cannot be analysed; the message names the field."""
