"""`palign run`: the whole pipeline from one YAML."""

from __future__ import annotations

from typing import Annotated

import typer

NAME = "run"


def command(
    pipeline: Annotated[str, typer.Argument(help="Pipeline YAML (see configs/demo.yaml).")],
    start: Annotated[str | None, typer.Option("--from", help="First stage to run: truncate, align, train, infer or eval.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last stage to run.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Run stages even if done earlier with the same options.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the stage commands and exit.")] = False,
) -> None:
    """Run truncate -> align -> train -> infer -> eval in a run directory.

    Each stage's YAML section holds its own flags (`max_tokens: 64` is --max-tokens 64). Stages
    resume where they stopped; a stage done earlier with the same options and inputs is skipped.
    The eval table ends the run.
    """
    from palign_cli import console
    from palign_cli.pipeline import load_pipeline, plan, run_steps, select

    spec = load_pipeline(pipeline)
    steps = select(plan(spec), start, until)
    if dry_run:
        for step in steps:
            typer.echo("palign " + " ".join(step.argv))
        return
    code = run_steps(spec, steps, console.info, force=force)
    if code:
        raise typer.Exit(code)
    console.info(f"run finished: {spec['run_dir']}")
