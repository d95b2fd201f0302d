"""`palign eval`."""

from __future__ import annotations

from palign_cli.errors import UsageError

NAME = "eval"


def command() -> None:
    """Not implemented yet."""
    raise UsageError("palign eval is not implemented yet")
