"""The `palign` executable: parses options, wires stages, maps errors to exit codes.

Each subcommand lives in `palign_cli/commands/`; this file only assembles the app.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Annotated, Any

import typer

from palign_cli import __version__

app = typer.Typer(
    name="palign",
    help="P-ALIGN reasoning distillation: truncate teacher CoTs to the prefix the student "
    "judges sufficient, align, train, infer and eval. JSONL in, JSONL out; every stage resumes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn domain errors into a one-line message and their exit code (2 for bad input).

    With PALIGN_DEBUG=1 the traceback is shown instead. Ctrl-C exits 130 and says how to resume:
    output written so far is complete records only.
    """
    from palign_cli.errors import PalignError

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from palign_cli import console

        try:
            return fn(*args, **kwargs)
        except PalignError as exc:
            if os.environ.get("PALIGN_DEBUG") == "1":
                raise
            console.err.print(f"error: {exc}", style="red", markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            console.err.print("interrupted: rerun the same command to resume", markup=False)
            raise typer.Exit(130) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"palign {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = False,
) -> None:
    """P-ALIGN reasoning distillation."""


def _register() -> None:
    from palign_cli.commands import align, eval, infer, report, run, tiny, train, truncate

    for module in (truncate, align, train, infer, eval, run, report, tiny):
        app.command(module.NAME, help=module.command.__doc__)(guarded(module.command))


_register()


def main() -> None:
    app()
