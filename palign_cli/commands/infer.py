"""`palign infer`: sample benchmark completions with the trained prompt."""

from __future__ import annotations

from typing import Annotated

import typer

from palign_cli import options as o

NAME = "infer"


def command(
    input: o.Input,
    model: o.Model,
    output: o.Output = "-",
    backend: o.Backend = o.BackendName.auto,
    n: o.N = 3,
    temperature: o.Temperature = 0.6,
    top_p: o.TopP = 0.9,
    top_k: o.TopK = -1,
    repetition_penalty: o.RepetitionPenalty = 1.05,
    max_tokens: o.MaxTokens = 4096,
    seed: o.Seed = 0,
    enable_thinking: o.EnableThinking = None,
    prompt_template: Annotated[
        str | None,
        typer.Option("--prompt-template", help="File with the user prompt; {question} is filled in. Default: the training prompt."),
    ] = None,
    question_field: o.QuestionField = None,
    id_field: o.IdField = "id",
    overwrite: o.Overwrite = False,
    shard: o.ShardOpt = None,
    skip_invalid: o.SkipInvalid = False,
    batch_size: o.BatchSize = 64,
    dtype: o.Dtype = "auto",
    max_model_len: o.MaxModelLen = None,
    tensor_parallel_size: o.TensorParallel = 1,
    gpu_memory_utilization: o.GpuMemory = 0.9,
    base_url: o.BaseUrl = None,
    max_concurrency: o.MaxConcurrency = 32,
    token_budget: o.TokenBudget = 16384,
) -> None:
    """Sample --n completions per problem with the prompt `palign train` trains on.

    Each record gets `outputs`, `finish_reasons` and `output_tokens`. Seeds derive from --seed
    and the record id, so a resumed run reproduces the same samples on the same engine.
    """
    from palign_cli import console
    from palign_cli.commands.common import backend_options, build_backend, resolve_backend, stage_io
    from palign_cli.prompts import SOLVE_PROMPT, load_template
    from palign_cli.records import field_names
    from palign_cli.stages.infer import InferConfig, run_infer

    engine = resolve_backend(backend.value)
    cfg = InferConfig(
        model=model,
        backend=engine,
        n=n,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        max_tokens=max_tokens,
        seed=seed,
        prompt_template=load_template(prompt_template, SOLVE_PROMPT, ("{question}",)),
        enable_thinking=enable_thinking,
    )
    io = stage_io(
        NAME, input, output, cfg.fingerprint(),
        required={"question": field_names("question", question_field)},
        id_field=id_field, overwrite=overwrite, shard=shard, skip_invalid=skip_invalid,
    )
    with io:
        engine_opts = backend_options(
            model, dtype=dtype, max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size, gpu_memory_utilization=gpu_memory_utilization,
            base_url=base_url, max_concurrency=max_concurrency, token_budget=token_budget,
        )
        llm = build_backend(engine, engine_opts)
        reporter = console.Reporter("infer", "problems")
        reporter.start(io.total())
        try:
            stats = run_infer(io, llm, cfg, batch_size=batch_size, reporter=reporter)
        finally:
            reporter.stop()
            llm.close()
    console.info(
        f"infer: {stats.records} problems, {stats.samples} samples, {stats.tokens} tokens, "
        f"{stats.truncated} cut by --max-tokens; {io.skipped} already done, {io.rejected} rejected"
    )
