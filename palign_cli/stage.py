"""What a JSONL stage declares so that one runner can do its plumbing.

A stage says which fields it reads (its input schema), what it needs (an engine, a grader),
and how to run a batch of work; the runner (`commands/runner.py`) opens the I/O, builds the
engine and the grader, shows progress and prints the summary line, the same for every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from palign_cli.reporting import NullReporter, ProgressSink


@dataclass(frozen=True)
class GraderNeed:
    """The stage grades samples: with this many workers (None: one per CPU) and time limit;
    `strict`: no second opinion (grading.py)."""

    workers: int | None = None
    timeout: float = 5.0
    strict: bool = False


@dataclass
class Context:
    """What a stage's run function gets from the runner."""

    io: Any  # records.StageIO
    backend: Any = None  # backends.Backend, when the stage needs one
    grader: Any = None  # grading.Grader, when the stage needs one
    reporter: ProgressSink = field(default_factory=NullReporter)


@dataclass(frozen=True)
class StageRun:
    """One run of a stage, as its command assembled it from the flags."""

    name: str
    config: Any  # a frozen config with fingerprint() and defaults()
    required: Mapping[str, Sequence[str]]
    run: Callable[[Context], Any]  # does the work, returns the stage's stats
    summary: Callable[[Any, Any], str]  # (stats, io) -> the one line printed at the end
    optional: Mapping[str, Sequence[str]] = field(default_factory=dict)
    needs_engine: bool = True
    grader: GraderNeed | None = None
    unit: str = "problems"
    source_field: str | None = None  # several inputs into one output: where each record's source goes
    source_name: Callable[[str], str] | None = None
    report: Callable[[Any], None] | None = None  # more to show after the run (eval's table)
