"""`palign truncate`: the paper's adaptive prefix search over teacher CoTs."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from palign_cli import options as o

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


def command(
    input: o.Input,
    model: o.Model,
    output: o.Output = "-",
    backend: o.Backend = o.BackendName.auto,
    unit: Annotated[
        Unit,
        typer.Option("--unit", help="What k counts: sentences (LaTeX, decimals, abbreviations kept whole), lines, paragraphs, or the reference's '. ' split.", rich_help_panel=SEARCH_PANEL),
    ] = Unit.sentence,
    judge: Annotated[
        JudgeMode,
        typer.Option("--judge", help="generate: sample a reply, sufficient if it says [ENOUGH] (the paper's rule). logprob: P([ENOUGH]) vs [NOT_ENOUGH] at every boundary in one pass.", rich_help_panel=SEARCH_PANEL),
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
        typer.Option("--save-curve", help="logprob: keep P(ENOUGH) for every boundary in the record's `curve`.", rich_help_panel=SEARCH_PANEL),
    ] = False,
    judge_prompt: Annotated[
        str | None,
        typer.Option("--judge-prompt", metavar="FILE", help="Judge prompt file with {question} and {reasoning_part}. Default: the paper's, verbatim.", rich_help_panel=SEARCH_PANEL),
    ] = None,
    max_active: Annotated[
        int,
        typer.Option("--max-active", min=1, help="Problems searched at once; one probe of each goes into every engine call.", rich_help_panel=SEARCH_PANEL),
    ] = 64,
    temperature: o.Temperature = 0.0,
    top_p: o.TopP = 1.0,
    top_k: o.TopK = -1,
    max_tokens: o.MaxTokens = 16,
    seed: o.Seed = 0,
    enable_thinking: o.EnableThinking = False,
    question_field: o.QuestionField = None,
    cot_field: o.CotField = None,
    id_field: o.IdField = "id",
    overwrite: o.Overwrite = False,
    shard: o.ShardOpt = None,
    skip_invalid: o.SkipInvalid = False,
    dtype: o.Dtype = "auto",
    max_model_len: o.MaxModelLen = None,
    tensor_parallel_size: o.TensorParallel = 1,
    gpu_memory_utilization: o.GpuMemory = 0.9,
    base_url: o.BaseUrl = None,
    max_concurrency: o.MaxConcurrency = 32,
    token_budget: o.TokenBudget = 16384,
) -> None:
    """Find, per problem, the shortest CoT prefix the student model judges sufficient.

    Each record gets `prefix` (exact text of the first units of the CoT), `prefix_units`,
    `total_units`, `prefix_ratio`, `is_sufficient`, `search`, `trace` (one entry per probe)
    and `judge_calls`; when the judge prompt does not fit the context for long prefixes,
    `units_fit` and a `note` say so. The generate judge is greedy unless --temperature is set.
    """
    from palign_cli import console
    from palign_cli.commands.common import backend_options, build_backend, resolve_backend, stage_io
    from palign_cli.prompts import JUDGE_PROMPT, load_template
    from palign_cli.records import field_names
    from palign_cli.stages.truncate import TruncateConfig, run_truncate

    engine = resolve_backend(backend.value)
    cfg = TruncateConfig(
        model=model,
        backend=engine,
        unit=unit.value,
        judge=judge.value,
        search=search,
        threshold=threshold,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_tokens,
        seed=seed,
        judge_prompt=load_template(judge_prompt, JUDGE_PROMPT, ("{question}", "{reasoning_part}")),
        enable_thinking=enable_thinking,
        save_curve=save_curve,
        max_model_len=max_model_len,
    )
    io = stage_io(
        NAME, input, output, cfg.fingerprint(),
        required={"question": field_names("question", question_field), "cot": field_names("cot", cot_field)},
        id_field=id_field, overwrite=overwrite, shard=shard, skip_invalid=skip_invalid,
    )
    with io:
        llm = None
        if cfg.strategy.needs_judge:
            llm = build_backend(engine, backend_options(
                model, dtype=dtype, max_model_len=max_model_len,
                tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
                base_url=base_url, max_concurrency=max_concurrency, token_budget=token_budget,
            ))
        reporter = console.Reporter("truncate", "problems")
        reporter.start(io.total())
        try:
            stats = run_truncate(io, llm, cfg, max_active=max_active, reporter=reporter)
        finally:
            reporter.stop()
            if llm is not None:
                llm.close()
    tokens = f"{stats.tokens_read} tokens read" if stats.tokens_read else "tokens read not reported by the engine"
    console.info(
        f"truncate: {stats.problems} problems, mean ratio {stats.mean_ratio:.3f}, "
        f"{stats.share_sufficient:.0%} sufficient, {stats.judge_calls} judge calls in "
        f"{stats.backend_calls} engine calls, {tokens}; {stats.bounded} bounded by the context, "
        f"{io.skipped} already done, {io.rejected} rejected"
    )
