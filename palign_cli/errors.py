"""Domain exceptions. The CLI turns them into one-line messages and exit codes.

Click's generic ClickException exits 1, but bad input must exit 2 (like a usage error), so
input problems get their own class with their own code.
"""

from __future__ import annotations


class PalignError(Exception):
    """Base class: a message meant for a person, and the exit code it maps to."""

    exit_code = 1


class UsageError(PalignError):
    """Options that cannot work together, a bad value, a missing file."""

    exit_code = 2


class InputError(PalignError):
    """A record that cannot be used, located as `file:line: field 'x': problem`."""

    exit_code = 2

    def __init__(self, path: str, line: int | None, problem: str, field: str | None = None):
        self.path, self.line, self.field, self.problem = path, line, field, problem
        where = f"{path}:{line}" if line is not None else path
        what = f"field '{field}' {problem}" if field else problem
        super().__init__(f"{where}: {what}")


class ConfigMismatch(PalignError):
    """Resuming an output that was written under a different stage config."""

    exit_code = 2


class BackendUnavailable(PalignError):
    """The engine behind --backend is not installed or not reachable; the message names the fix."""

    exit_code = 2


class BackendError(PalignError):
    """The engine failed while serving a request (after retries, where retries apply)."""

    exit_code = 1
