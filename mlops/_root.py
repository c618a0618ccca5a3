"""Transitional: where the project lives (replaced by mlops.project)."""

import os
from pathlib import Path

PROJECT_ROOT = Path(os.environ.get("MLOPS_PROJECT_ROOT", Path(__file__).resolve().parent.parent))
