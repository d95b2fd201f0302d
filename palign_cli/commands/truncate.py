"""`palign truncate`."""

from __future__ import annotations

from palign_cli.errors import UsageError

NAME = "truncate"


def command() -> None:
    """Not implemented yet."""
    raise UsageError("palign truncate is not implemented yet")
