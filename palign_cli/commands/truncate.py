"""`palign truncate`: the paper's adaptive prefix search over teacher CoTs."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from palign_cli.options import Group, engine_groups, field_group, io_group, with_groups
from palign_cli.stages.truncate import SAMPLING, SAMPLING_FLAGS

NAME = "truncate"
SEARCH_PANEL = "Search and judge"


class Unit(str, Enum):
    sentence = "sentence"
    line = "line"
    paragraph = "paragraph"
    reference = "reference"


class JudgeMode(str, Enum):
    generate = "generate"
    logprob = "logprob"


@with_groups(
    io=io_group(None), fields=field_group("question", "cot"),
    sampling=Group(SAMPLING, only=SAMPLING_FLAGS), **engine_groups(),
)
def command(
    unit: Annotated[
        Unit,
        typer.Option("--unit", help="What k counts: sentences (LaTeX, decimals, abbreviations kept whole), lines, paragraphs, or the reference's '. ' split.", rich_help_panel=SEARCH_PANEL),
    ] = Unit.sentence,
    judge: Annotated[
        JudgeMode,
        typer.Option("--judge", help="generate: sample a reply, sufficient if it says [ENOUGH] (the paper's rule). logprob: sufficient if P([ENOUGH]) vs [NOT_ENOUGH] reaches --threshold. On hf both probe a per-problem KV cache read once, only as far as the search goes.", rich_help_panel=SEARCH_PANEL),
    ] = JudgeMode.generate,
    search: Annotated[
        str,
        typer.Option("--search", metavar="binary|linear|ratio:R", help="binary (the paper's), linear (the no-binary-search ablation), or ratio:R (keep ceil(R*units), no judge).", rich_help_panel=SEARCH_PANEL),
    ] = "binary",
    threshold: Annotated[
        float,
        typer.Option("--threshold", min=0.0, max=1.0, help="logprob: sufficient when P(ENOUGH) >= this.", rich_help_panel=SEARCH_PANEL),
    ] = 0.5,
    save_curve: Annotated[
        bool,
        typer.Option("--save-curve", help="logprob: score every boundary (one pass per CoT) and keep P(ENOUGH) in the record's `curve`; without it only the search's probes are scored.", rich_help_panel=SEARCH_PANEL),
    ] = False,
    judge_prompt: Annotated[
        str | None,
        typer.Option("--judge-prompt", "--prompt-template", metavar="FILE", help="Judge prompt file with {question} and {reasoning_part}. Default: the paper's, verbatim.", rich_help_panel=SEARCH_PANEL),
    ] = None,
    max_active: Annotated[
        int,
        typer.Option("--max-active", min=1, help="Problems searched at once; one probe of each goes into every engine call.", rich_help_panel=SEARCH_PANEL),
    ] = 64,
    **groups,
) -> None:
    """Find, per problem, the shortest CoT prefix the student model judges sufficient.

    Each record gets `prefix` (exact text of the first units of the CoT), `prefix_units`,
    `total_units`, `prefix_ratio`, `is_sufficient`, `search`, `trace` (one entry per probe)
    and `judge_calls`; when the judge prompt does not fit the context for long prefixes,
    `units_fit` and a `note` say so. The generate judge is greedy unless --temperature is set.
    """
    from palign_cli.commands.runner import resolve_engine, run_stage
    from palign_cli.prompts import JUDGE_PROMPT, load_template
    from palign_cli.stage import StageRun
    from palign_cli.stages.truncate import TruncateConfig, run_truncate, summary

    io, engine = groups["io"], resolve_engine(groups["engine"], groups["engine_options"])
    cfg = TruncateConfig(
        model=engine.options.model, backend=engine.name, unit=unit.value, judge=judge.value, search=search,
        threshold=threshold, sampling=groups["sampling"], save_curve=save_curve,
        judge_prompt=load_template(judge_prompt, JUDGE_PROMPT, ("{question}", "{reasoning_part}")),
        max_model_len=engine.options.max_model_len,
    )
    run_stage(StageRun(
        NAME, cfg, required=groups["fields"].roles("question", "cot"), summary=summary,
        needs_engine=cfg.strategy.needs_judge,
        run=lambda ctx: run_truncate(ctx.io, ctx.backend, cfg, max_active=max_active, reporter=ctx.reporter),
    ), io, engine)
