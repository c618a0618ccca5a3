"""One command's view of the world, resolved once at the CLI edge and handed to every command.

Commands receive this namespace (argparse fills in the flags) and read the project, the environment, the
config and the local home from it; nothing below the CLI reads the working directory or ``MLOPS_*``
variables for these.
"""

from __future__ import annotations

import argparse
import os
from functools import cached_property
from pathlib import Path

from mlops.project import ROOT_ENV

ENV_VAR = "MLOPS_ENV"


class Invocation(argparse.Namespace):
    project_dir: str | None = None
    env: str | None = None
    home: Path | None = None
    debug: bool = False

    @cached_property
    def project(self):
        from mlops.project import load_project

        return load_project(self.project_dir)

    @cached_property
    def optional_project(self):
        """The project when there is one (``mlops run --definition`` works outside any project)."""
        from mlops.project import ProjectError

        try:
            return self.project
        except ProjectError:
            if self.project_dir or os.environ.get(ROOT_ENV):
                raise
            return None

    @cached_property
    def environment(self) -> str:
        """``--env``, else ``$MLOPS_ENV``, else the default the project declares."""
        return self.env or os.environ.get(ENV_VAR) or self.project.default_env

    @cached_property
    def config(self):
        return self.project.load_config(self.environment)

    @cached_property
    def home_root(self) -> Path:
        from mlops.local.state.home import resolve_home

        project = self.optional_project
        default = project.default_home if project else Path.cwd() / ".mlops"
        return resolve_home(self.home, default)

    @cached_property
    def local_home(self):
        from mlops.local.state.home import Home

        return Home.open(self.home_root)


def add_env(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env",
        help=f"config environment: config/<env>.yaml (default: ${ENV_VAR}, else the project's default-env)",
    )


def add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--home", type=Path, help="local home (default: $MLOPS_HOME, else <project>/.mlops)")


def add_format(parser: argparse.ArgumentParser, choices=("table", "json")) -> None:
    parser.add_argument("--format", choices=list(choices), default=choices[0], help="output format")
