"""Live view of a local run: a rich table on a terminal, plain lines when stdout is a pipe or a file.

With ``show_logs`` job log lines are printed too: as plain lines, or above the table on a terminal.

Used by the CLI only (library code logs); pass an instance as ``on_event`` to ``run_definition``.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mlops.local.records import Event, StepRecord

STYLE = {
    "Succeeded": "green",
    "Failed": "red",
    "Stopped": "yellow",
    "Executing": "cyan",
    "NotExecuted": "dim",
    "Pending": "dim",
}


def key_metric(record: StepRecord | None) -> str:
    """The metric worth a column: a validation/test one if the step has it, else the first."""
    if not record or not record.metrics:
        return ""
    names = sorted(record.metrics)
    best = next((n for n in names if "valid" in n or "test" in n or "accuracy" in n), names[0])
    return f"{best}={record.metrics[best]:.4g}"


def _seconds(record: StepRecord) -> float | None:
    if record.duration_s is not None and record.status != "Executing":
        return record.duration_s
    if record.started_at:
        started = datetime.fromisoformat(record.started_at)
        return (datetime.now(started.tzinfo) - started).total_seconds()
    return None


class RunProgress:
    """Callable ``on_event`` sink; use as a context manager around ``run_definition``."""

    def __init__(self, console: Console | None = None, show_logs: bool = False):
        self.console = console or Console()
        self.live_mode = self.console.is_terminal
        self.show_logs = show_logs
        self.execution_id: str | None = None
        self.records: dict[str, StepRecord] = {}
        self.notes: dict[str, str] = {}
        self.lock = threading.Lock()
        self.live: Live | None = None
        self.started = time.monotonic()

    def __enter__(self) -> RunProgress:
        if self.live_mode:
            self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.live.__exit__(*exc)
            self.live = None

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.execution_id = event.execution_id
            if event.record is not None:
                self.records[event.step] = event.record
            if event.step and event.kind in ("step-finished", "step-retry"):
                self.notes[event.step] = event.message
        if not self.live_mode:
            self._line(event)
        elif event.kind == "log" and self.show_logs:
            # above the live table: rich prints it there while the table keeps redrawing below
            self.console.print(Text.assemble((f"{event.step} ", "dim"), event.message), soft_wrap=True)

    def _line(self, event: Event) -> None:
        if event.kind == "log":
            if self.show_logs:
                self.console.print(f"{event.step} {event.message}", markup=False, highlight=False)
            return
        if event.kind == "step-listed":
            return
        if event.kind == "execution-started":
            self.console.print(f"execution {event.execution_id}: Executing", highlight=False)
        elif event.kind == "execution-finished":
            self.console.print(f"execution {event.execution_id}: {event.status}", highlight=False)
        elif event.step:
            rec = event.record
            parts = [f"{event.step}: {event.status}"]
            if rec and rec.duration_s is not None and event.kind == "step-finished":
                parts.append(f"{rec.duration_s:.1f}s")
            if metric := key_metric(rec):
                parts.append(metric)
            if event.message and event.status != "Executing" or event.kind == "step-retry":
                parts.append(event.message.strip().splitlines()[-1] if event.message.strip() else "")
            self.console.print("  ".join(p for p in parts if p), markup=False, highlight=False)

    def __rich__(self) -> Table:
        title = f"execution {self.execution_id or '…'}  ({time.monotonic() - self.started:.0f}s)"
        table = Table(title=title, title_justify="left", expand=False)
        for col in ("step", "type", "status", "duration", "metric", "note"):
            table.add_column(
                col, no_wrap=col != "note", overflow="ellipsis", max_width=60 if col == "note" else None
            )
        with self.lock:
            for name, rec in self.records.items():
                secs = _seconds(rec)
                status = "cache hit" if rec.cache_hit else rec.status
                note = (self.notes.get(name) or "").strip().splitlines()
                table.add_row(
                    name,
                    rec.type,
                    f"[{STYLE.get(rec.status, '')}]{status}[/]",
                    "" if secs is None else f"{secs:.1f}s",
                    key_metric(rec),
                    escape(note[-1]) if note and rec.status in ("Failed", "Stopped", "Executing") else "",
                )
        return table
