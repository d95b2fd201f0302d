"""Everything people read goes to stderr through here; stdout carries only JSONL data.

Progress bars show only when stderr is a terminal, so piped and CI runs stay quiet.
"""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# emoji=False: user text such as `infer:a:b` must not turn into an emoji (":a:").
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def info(message: str) -> None:
    err.print(message, markup=False)


def warn(message: str) -> None:
    err.print(f"warning: {message}", style="yellow", markup=False)


class Reporter:
    """The progress interface stages call (`start`, `advance`, `note`); Rich behind it.

    Stages never import Rich: they receive one of these (or `NullReporter`).
    """

    def __init__(self, description: str, unit: str = "records"):
        self.description, self.unit = description, unit
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, total: int | None) -> None:
        if not err.is_terminal:
            return
        self._progress = Progress(
            TextColumn("{task.description}", markup=False, style="bold"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(self.unit),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=total, rate="")

    def advance(self, n: int = 1, rate: str = "") -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, rate=rate)

    def note(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False)
        else:
            info(message)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def is_stdout_tty() -> bool:
    return sys.stdout.isatty()
