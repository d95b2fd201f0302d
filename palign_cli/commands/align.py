"""`palign align`: the student continues its sufficient prefixes; verified continuations become targets."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from palign_cli.config import Grading, GradingPolicy
from palign_cli.options import Group, engine_groups, field_group, io_group, with_groups
from palign_cli.stages.align import SAMPLING

NAME = "align"
ALIGN_PANEL = "Alignment and grading"


class Mode(str, Enum):
    prompt = "prompt"
    prefill = "prefill"


class Markers(str, Enum):
    prefix = "prefix"
    draft = "draft"
    think = "think"
    none = "none"


@with_groups(
    io=io_group(16), fields=field_group("question", "answer"), grading=Group(Grading(), panel=ALIGN_PANEL),
    policy=Group(GradingPolicy(), only=("strict",), panel=ALIGN_PANEL),
    sampling=Group(SAMPLING), **engine_groups(),
)
def command(
    mode: Annotated[
        Mode,
        typer.Option("--mode", help="prompt: the paper's user turn with question and draft. prefill: the training prompt, with the reply begun by the prefix.", rich_help_panel=ALIGN_PANEL),
    ] = Mode.prompt,
    markers: Annotated[
        Markers,
        typer.Option("--markers", help="Target spelling: prefix <Begin_of_Prefix>…<End_of_Prefix> (the paper's data), draft, think <think>…</think>, or none.", rich_help_panel=ALIGN_PANEL),
    ] = Markers.prefix,
    verify: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Grade continuations against the gold answer. --no-verify (no gold): the first finished sample is the target and `verified` is null.", rich_help_panel=ALIGN_PANEL),
    ] = True,
    prompt_template: Annotated[
        str | None,
        typer.Option("--prompt-template", metavar="FILE", help="User prompt file: {question} and {prefix} (prompt mode) or {question} (prefill). Default: the paper's.", rich_help_panel=ALIGN_PANEL),
    ] = None,
    **groups,
) -> None:
    """Sample --n continuations of each `palign truncate` prefix and keep the first verified one.

    Each record gets `samples` (text, finish_reason, pred, verified, grade_status), `verified`
    and `target` (the SFT target, or null when no sample verified). A sample cut by
    --max-tokens never counts as verified; --max-tokens is capped by the context left after the
    prompt. Grading is `palign eval`'s (math-verify, gold first). Seeds derive from --seed and
    the record id, so a resumed run samples the same way.
    """
    from palign_cli.commands.runner import resolve_engine, run_stage
    from palign_cli.prompts import load_template
    from palign_cli.stage import GraderNeed, StageRun
    from palign_cli.stages.align import (
        AlignConfig,
        default_template,
        run_align,
        summary,
        template_placeholders,
    )

    io, grading, engine = groups["io"], groups["grading"], resolve_engine(groups["engine"], groups["engine_options"])
    cfg = AlignConfig(
        model=engine.options.model, backend=engine.name, mode=mode.value, sampling=groups["sampling"],
        markers=markers.value, verify=verify, grade_timeout=grading.grade_timeout, strict=groups["policy"].strict,
        prompt_template=load_template(prompt_template, default_template(mode.value), template_placeholders(mode.value)),
    )
    required = groups["fields"].roles("question", *(("answer",) if verify else ()))
    run_stage(StageRun(
        NAME, cfg, required={**required, "prefix": ("prefix",)},
        grader=GraderNeed(grading.grade_workers, grading.grade_timeout, cfg.strict) if verify else None,
        run=lambda ctx: run_align(ctx.io, ctx.backend, cfg, ctx.grader, batch_size=io.batch_size, reporter=ctx.reporter),
        summary=lambda stats, io_: summary(stats, io_, verify),
    ), io, engine)
