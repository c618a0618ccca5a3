"""The CLI's one way to print: rich consoles, JSON for scripts, short timestamps."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

__all__ = ["escape", "out", "err", "print_json", "short_time"]


class _Console(Console):
    def on_broken_pipe(self) -> None:
        raise BrokenPipeError  # the CLI's boundary ends quietly with 141, as a SIGPIPE'd tool would


def out() -> Console:
    """stdout: a terminal keeps its width; a pipe or file gets wide lines rather than tables folded to 80."""
    console = _Console(highlight=False, soft_wrap=True)
    return console if console.is_terminal else _Console(width=200, highlight=False, soft_wrap=True)


def err() -> Console:
    return _Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def short_time(iso: Any) -> str:
    return str(iso or "")[:19].replace("T", " ")
