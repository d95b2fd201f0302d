"""`palign align`."""

from __future__ import annotations

from palign_cli.errors import UsageError

NAME = "align"


def command() -> None:
    """Not implemented yet."""
    raise UsageError("palign align is not implemented yet")
