"""Where a run's definition came from: the git commit of the project and whether its tree was dirty.

Recorded with each local execution (``executions.source``) and copied into every model version it
registers, so a version's lineage names the code it was built from; ``mlops models compare`` diffs it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_source(root: Path) -> dict[str, Any] | None:
    """``{"git_commit", "git_branch", "git_dirty", "git_changed_files"}`` of the work tree at ``root``;
    None when ``root`` is not in a git repository (or git is not installed). Dirty counts every change
    ``git status`` shows, untracked files included: any of them may be in a code bundle."""
    if shutil.which("git") is None:
        return None
    commit = _git(root, "rev-parse", "HEAD")
    if not commit:
        return None
    status = _git(root, "status", "--porcelain")
    changed = [line for line in (status or "").splitlines() if line.strip()]
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    return {
        "git_commit": commit,
        "git_branch": None if branch in (None, "HEAD") else branch,
        "git_dirty": bool(changed),
        "git_changed_files": len(changed),
    }
