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


# Exits and usage errors Typer (and the click under it, its own or vendored) handles itself.
PASS_THROUGH: tuple[type[BaseException], ...] = (typer.Exit, typer.Abort, *(
    (typer.TyperException,) if hasattr(typer, "TyperException") else ()))
try:
    import click as _click

    PASS_THROUGH += (_click.exceptions.Exit, _click.exceptions.Abort, _click.ClickException)
except ImportError:  # Typer >= 0.17 vendors its own click
    pass


def guarded(fn: Callable[..., Any], resumes: bool = True) -> Callable[..., Any]:
    """Turn every failure into one line on stderr and an exit code; never a raw traceback.

    Domain errors keep their code (2 for bad input). Operating-system errors (a read-only or
    full disk, `-o` naming a directory) name the path and reason and exit 1; outputs are
    written a whole record at a time, so for a stage that resumes the line says a rerun does.
    Anything else is a bug: one line, and PALIGN_DEBUG=1 shows the traceback (as it does for
    every error above). Ctrl-C exits 130 and says how to resume.
    """
    from palign_cli.errors import PalignError

    rerun = "; rerun the same command to resume" if resumes else ""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from palign_cli import console

        def fail(message: str, code: int) -> typer.Exit:
            console.err.print(f"error: {message}", style="red", markup=False, highlight=False, soft_wrap=True)
            return typer.Exit(code)

        try:
            return fn(*args, **kwargs)
        except PASS_THROUGH:
            raise
        except KeyboardInterrupt:
            console.err.print("interrupted: rerun the same command to resume", markup=False)
            raise typer.Exit(130) from None
        except Exception as exc:
            if os.environ.get("PALIGN_DEBUG") == "1":
                raise
            if isinstance(exc, PalignError):
                raise fail(str(exc), exc.exit_code) from None
            if isinstance(exc, OSError):
                raise fail(describe_os_error(exc) + rerun, 1) from None
            what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise fail(f"unexpected {what.splitlines()[0]} (a bug in palign; rerun with PALIGN_DEBUG=1 "
                       "for the traceback)", 1) from None

    return wrapper


def describe_os_error(exc: OSError) -> str:
    """`PATH: reason` in one line, as the shell's own tools say it."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


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
        resumes = module in (truncate, align, train, infer, eval, run)
        app.command(module.NAME, help=module.command.__doc__)(guarded(module.command, resumes))


_register()


def main() -> None:
    app()
