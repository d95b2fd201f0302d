"""`palign infer`."""

from __future__ import annotations

from palign_cli.errors import UsageError

NAME = "infer"


def command() -> None:
    """Not implemented yet."""
    raise UsageError("palign infer is not implemented yet")
