"""SageMaker Processing and Training jobs run locally, with the container contract SageMaker gives them.

``run_processing_job`` / ``run_training_job`` take a resolved Create*Job request (the step's ``Arguments``,
minus the job name) and return a :class:`JobResult` whose ``properties`` are shaped like the matching
Describe*Job response, ready for later steps' ``Get`` expressions.
"""

from mlops.local.runtime.common import JobRequestError, JobResult
from mlops.local.runtime.processing import run_processing_job
from mlops.local.runtime.training import run_training_job

__all__ = ["JobRequestError", "JobResult", "run_processing_job", "run_training_job"]
