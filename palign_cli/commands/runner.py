"""The plumbing every JSONL stage shares: engine, I/O, grader, progress, summary line.

A command parses its flags into option groups and a stage config, assembles a `StageRun`
and hands it here; nothing below knows which stage it runs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Any

from palign_cli.backends.base import BackendOptions
from palign_cli.options import EngineChoice, IOOptions
from palign_cli.stage import Context, GraderNeed, StageRun


@dataclass(frozen=True)
class EngineSpec:
    """The engine a stage will build: its registered name and its settings."""

    name: str
    options: BackendOptions


def resolve_engine(choice: EngineChoice, options: BackendOptions) -> EngineSpec:
    """The concrete engine (saying on stderr what `auto` chose and why), checked to exist, with
    the model spelled one way and `--engine-opt` applied.

    Resolved before the output is opened, so the stored config names the real engine and a
    missing engine fails before any model is loaded.
    """
    from palign_cli import backends, console
    from palign_cli.identity import normalize_model

    name = choice.backend
    if name == "auto":
        name, why = backends.resolve_auto()
        console.info(f"backend: {name} ({why})")
    backends.backend_requires(name)
    model = choice.model if name == "openai" else normalize_model(choice.model)
    options = backends.apply_engine_opts(name, replace(options, model=model), choice.engine_opt or [])
    for flag in backends.unused_flags(name, options):
        console.warn(f"{flag} is not used by --backend {name}; ignored")
    return EngineSpec(name, options)


def _grader(need: GraderNeed | None) -> Any:
    if need is None:
        return contextlib.nullcontext(None)
    from palign_cli.grading import Grader

    return Grader(workers=need.workers, timeout=need.timeout, strict=need.strict)


def open_io(stage: StageRun, io: IOOptions, engine: EngineSpec | None) -> Any:
    from palign_cli.identity import model_identity
    from palign_cli.records import Shard, StageIO

    model = model_identity(engine.options.model) if engine is not None else None
    return StageIO(
        io.input, io.output, stage=stage.name, config=stage.config.fingerprint(),
        defaults=type(stage.config).defaults(), model=model,
        required=stage.required, optional=stage.optional, id_field=io.id_field,
        overwrite=io.overwrite, shard=Shard.parse(io.shard), skip_invalid=io.skip_invalid, rejects=io.rejects,
        source_field=stage.source_field, source_name=stage.source_name,
    )


def run_stage(stage: StageRun, io_options: IOOptions, engine: EngineSpec | None) -> Any:
    """Open the I/O, build what the stage needs, run it with a progress bar, say how it went."""
    from palign_cli import console
    from palign_cli.backends import make_backend

    engine = engine if stage.needs_engine else None
    io = open_io(stage, io_options, engine)
    with io, _grader(stage.grader) as grader:
        backend = make_backend(engine.name, engine.options) if engine is not None else None
        reporter = console.Reporter(stage.name, stage.unit)
        reporter.start(io.total())
        try:
            stats = stage.run(Context(io, backend, grader, reporter))
        finally:
            reporter.stop()
            if backend is not None:
                backend.close()
    if stage.report is not None:
        stage.report(stats)
    console.info(stage.summary(stats, io))
    if io.rejected and (io_options.output == "-" or io_options.rejects):
        console.info(f"{io.rejected} rejected record(s) set aside in {io.rejects.path}")
    return stats
