"""`palign infer`: sample benchmark completions with the trained prompt."""

from __future__ import annotations

from typing import Annotated

import typer

from palign_cli.options import Group, engine_groups, field_group, io_group, with_groups
from palign_cli.stages.infer import SAMPLING

NAME = "infer"


@with_groups(io=io_group(64), fields=field_group("question"), sampling=Group(SAMPLING), **engine_groups())
def command(
    prompt_template: Annotated[
        str | None,
        typer.Option("--prompt-template", metavar="FILE", help="File with the user prompt; {question} is filled in. Default: the training prompt."),
    ] = None,
    **groups,
) -> None:
    """Sample --n completions per problem with the prompt `palign train` trains on.

    Each record gets `outputs`, `finish_reasons` and `output_tokens`. Seeds derive from --seed
    and the record id, so a resumed run reproduces the same samples on the same engine.
    """
    from palign_cli.commands.runner import resolve_engine, run_stage
    from palign_cli.prompts import SOLVE_PROMPT, load_template
    from palign_cli.stage import StageRun
    from palign_cli.stages.infer import InferConfig, run_infer, summary

    io, engine = groups["io"], resolve_engine(groups["engine"], groups["engine_options"])
    cfg = InferConfig(
        model=engine.options.model, backend=engine.name, sampling=groups["sampling"],
        prompt_template=load_template(prompt_template, SOLVE_PROMPT, ("{question}",)),
    )
    run_stage(StageRun(
        NAME, cfg, required=groups["fields"].roles("question"), summary=summary,
        run=lambda ctx: run_infer(ctx.io, ctx.backend, cfg, batch_size=io.batch_size, reporter=ctx.reporter),
    ), io, engine)
