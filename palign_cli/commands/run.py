"""`palign run`: the whole pipeline from one YAML, as an incremental build."""

from __future__ import annotations

from typing import Annotated, Any

import typer

NAME = "run"


def command(
    pipeline: Annotated[str, typer.Argument(help="Pipeline YAML (see configs/demo.yaml).")],
    start: Annotated[str | None, typer.Option("--from", help="First stage to run: truncate, align, train, infer or eval.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Last stage to run.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo every chosen step from scratch, even if nothing changed.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the pipeline, print each step (run and why, or skip) with its command, run nothing.")] = False,
) -> None:
    """Run truncate -> align -> train -> infer -> eval in a run directory.

    Each stage's YAML section holds its own flags (`max_tokens: 64` is --max-tokens 64); the
    whole pipeline is checked before the first stage starts. A step is skipped while its
    options, its inputs and its model are those it was made from; a step that did not finish
    resumes; a step whose options, inputs or model changed is redone from scratch, and every
    step after it that reads its output. The eval table and the report end the run.
    """
    from palign_cli import provenance
    from palign_cli.pipeline import command_line, run_steps

    spec, steps, chosen = _checked(pipeline, start, until)
    if dry_run:
        for d in provenance.decide(spec.run_dir, steps, chosen, force=force):
            typer.echo(f"{d.step.name}: " + ("skip" if d.action == "skip" else f"run: {d.why}"))
            typer.echo("    " + command_line(d.argv))
        return
    with provenance.run_lock(spec.run_dir):
        decisions = provenance.decide(spec.run_dir, steps, chosen, force=force)
        code = run_steps(decisions, spec.run_dir, _say)
    if code:
        raise typer.Exit(code)
    if any(d.step.stage == "eval" and d.action == "skip" for d in decisions):
        _show_table(spec.run_dir)  # (a stage that ran has just shown it)
    _say(f"run finished: {spec.run_dir}")
    _write_report(spec.run_dir)


def _say(message: str) -> None:
    """Step names such as `infer:a:` are user text: no markup, no emoji codes."""
    from palign_cli import console

    console.err.print(message, markup=False, emoji=False)


def _checked(path: str, start: str | None, until: str | None):
    """The pipeline, its steps and the chosen ones; every problem at once, one line each."""
    from palign_cli import pipeline_spec
    from palign_cli.errors import UsageError
    from palign_cli.pipeline import check_files, check_values, plan, select

    commands = stage_commands()
    spec, problems = pipeline_spec.load(path, commands)
    steps = chosen = []
    if spec is not None:
        steps = plan(spec)
        try:
            chosen = select(steps, start, until)
        except UsageError as exc:
            problems.append(str(exc))
        problems += check_values(spec, steps, commands)
        if steps and not chosen and not problems:
            problems.append(f"{path}: nothing to run: no step of this pipeline is between --from and --until")
        problems += check_files(spec, steps, chosen)
    if problems:
        _refuse(problems)
    return spec, steps, chosen


def _refuse(problems: list[str]) -> None:
    from palign_cli import console

    for line in problems:
        console.err.print(f"error: {line}", style="red", markup=False)
    raise typer.Exit(2)


def stage_commands() -> dict[str, Any]:
    """The stages' real commands, as the CLI parses them: a pipeline's keys are their options."""
    import typer.main

    from palign_cli.cli import app
    from palign_cli.pipeline_spec import STAGES

    group = typer.main.get_command(app)
    return {name: group.commands[name] for name in STAGES}


def _show_table(run_dir: str) -> None:
    from pathlib import Path

    from palign_cli.eval_table import build_table, print_table, read_summary

    rows, average, count_cut = read_summary(str(Path(run_dir) / "summary.json"))
    print_table(build_table(rows, average, count_cut))


def _write_report(run_dir: str) -> None:
    from pathlib import Path

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        _say("report: not written (palign report needs matplotlib: pip install 'palign[report]')")
        return
    from palign_cli.errors import PalignError
    from palign_cli.report import build_report

    out = Path(run_dir) / "report.html"
    try:
        out.write_text(build_report(run_dir), encoding="utf-8")
    except (PalignError, OSError) as exc:  # the run itself is done: say so, and why no page
        _say(f"warning: report not written ({exc})")
        return
    _say(f"report: {out}")
