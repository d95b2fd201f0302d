"""One writer per output: an exclusive lock held for the whole run of a stage.

Two runs appending to one file would write every record twice, and an `--overwrite` under a
running stage would truncate the file beneath it. The lock is `filelock`'s (an OS lock on
`OUT.lock`, released by the kernel when the process dies, even by SIGKILL); the holder writes
its pid and command line into the lock file so that a refused run can say who holds it.
"""

from __future__ import annotations

import os
import sys

from palign_cli.errors import UsageError


def lock_path(output: str) -> str:
    return f"{output}.lock"


class OutputLock:
    """Taken at once or refused (exit 2, naming the holder); never waits."""

    def __init__(self, output: str):
        from filelock import FileLock, Timeout

        self.path = lock_path(output)
        self._lock = FileLock(self.path, timeout=0, thread_local=False)
        try:
            self._lock.acquire()
        except Timeout:
            raise UsageError(
                f"-o {output} is being written by another palign run ({self._holder()}); "
                "wait for it to finish, or write to another file"
            ) from None
        try:
            with open(self.path, "w", encoding="utf-8") as f:
                f.write(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
        except OSError:
            pass  # the lock holds without the note

    def _holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read().strip()[:200] or "pid unknown"
        except OSError:
            return "pid unknown"

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()
