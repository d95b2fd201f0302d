"""`palign align`: the student continues its sufficient prefixes; verified continuations become targets."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from palign_cli import options as o

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


def command(
    input: o.Input,
    model: o.Model,
    output: o.Output = "-",
    backend: o.Backend = o.BackendName.auto,
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
    grade_timeout: Annotated[
        float,
        typer.Option("--grade-timeout", min=0.01, help="Hard limit in seconds to grade one sample; past it the sample is not verified.", rich_help_panel=ALIGN_PANEL),
    ] = 5.0,
    grade_workers: Annotated[
        int | None,
        typer.Option("--grade-workers", min=1, help="Grading processes [default: one per CPU].", rich_help_panel=ALIGN_PANEL),
    ] = None,
    n: o.N = 4,
    temperature: o.Temperature = 0.6,
    top_p: o.TopP = 0.9,
    top_k: o.TopK = -1,
    repetition_penalty: o.RepetitionPenalty = 1.05,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=1, help="New tokens per sample, capped by the context left after the prompt.", rich_help_panel=o.SAMPLING_PANEL)
    ] = 32768,
    seed: o.Seed = 0,
    enable_thinking: o.EnableThinking = None,
    question_field: o.QuestionField = None,
    answer_field: o.AnswerField = None,
    id_field: o.IdField = "id",
    overwrite: o.Overwrite = False,
    shard: o.ShardOpt = None,
    skip_invalid: o.SkipInvalid = False,
    batch_size: o.BatchSize = 16,
    dtype: o.Dtype = "auto",
    max_model_len: o.MaxModelLen = None,
    tensor_parallel_size: o.TensorParallel = 1,
    gpu_memory_utilization: o.GpuMemory = 0.9,
    base_url: o.BaseUrl = None,
    max_concurrency: o.MaxConcurrency = 32,
    token_budget: o.TokenBudget = 16384,
) -> None:
    """Sample --n continuations of each `palign truncate` prefix and keep the first verified one.

    Each record gets `samples` (text, finish_reason, pred, verified, grade_status), `verified`
    and `target` (the SFT target, or null when no sample verified). A sample cut by
    --max-tokens never counts as verified. Grading is `palign eval`'s (math-verify, gold first).
    Seeds derive from --seed and the record id, so a resumed run samples the same way.
    """
    from palign_cli import console
    from palign_cli.commands.common import backend_options, build_backend, resolve_backend, stage_io
    from palign_cli.prompts import load_template
    from palign_cli.records import field_names
    from palign_cli.stages.align import (
        AlignConfig,
        default_template,
        run_align,
        template_placeholders,
    )

    engine = resolve_backend(backend.value)
    cfg = AlignConfig(
        model=model, backend=engine, mode=mode.value, n=n, temperature=temperature, top_p=top_p,
        top_k=top_k, repetition_penalty=repetition_penalty, max_tokens=max_tokens, seed=seed,
        markers=markers.value, verify=verify, enable_thinking=enable_thinking, grade_timeout=grade_timeout,
        prompt_template=load_template(prompt_template, default_template(mode.value), template_placeholders(mode.value)),
    )
    required = {"question": field_names("question", question_field), "prefix": ("prefix",)}
    if verify:
        required["answer"] = field_names("answer", answer_field)
    io = stage_io(NAME, input, output, cfg.fingerprint(), required=required, id_field=id_field,
                  overwrite=overwrite, shard=shard, skip_invalid=skip_invalid)
    with io, _grader(verify, grade_workers, grade_timeout) as grader:
        llm = build_backend(engine, backend_options(
            model, dtype=dtype, max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization, base_url=base_url,
            max_concurrency=max_concurrency, token_budget=token_budget,
        ))
        reporter = console.Reporter("align", "problems")
        reporter.start(io.total())
        try:
            stats = run_align(io, llm, cfg, grader, batch_size=batch_size, reporter=reporter)
        finally:
            reporter.stop()
            llm.close()
    share = f"{stats.verified} verified ({stats.verified_share:.0%})" if verify else f"{stats.unchecked} with a target (unchecked)"
    console.info(
        f"align: {stats.problems} problems, {share}, mean target length {stats.mean_target_chars:.0f} chars; "
        f"{stats.samples} samples, {stats.cut_by_length} cut by --max-tokens, {stats.grade_timeouts} grading timeouts, "
        f"{stats.no_room} prompts without room to continue; {io.skipped} already done, {io.rejected} rejected"
    )


def _grader(verify: bool, workers: int | None, timeout: float):
    """The shared grading pool, or nothing to enter when --no-verify."""
    import contextlib

    if not verify:
        return contextlib.nullcontext(None)
    from palign_cli.grading import Grader

    return Grader(workers=workers, timeout=timeout)
