"""`palign train`."""

from __future__ import annotations

from palign_cli.errors import UsageError

NAME = "train"


def command() -> None:
    """Not implemented yet."""
    raise UsageError("palign train is not implemented yet")
