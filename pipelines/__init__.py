"""SageMaker Pipelines MLOps project: config, DAGs, compile, local executor and AWS control plane."""

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("MLOPS_PROJECT_ROOT", Path(__file__).resolve().parent.parent))
