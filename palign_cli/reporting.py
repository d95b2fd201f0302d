"""The progress protocol stages report to, without importing any UI library."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def start(self, total: int | None) -> None: ...
    def advance(self, n: int = 1, rate: str = "") -> None: ...
    def note(self, message: str) -> None: ...
    def stop(self) -> None: ...


class NullReporter:
    """Reports nothing: the default for library use and tests."""

    def start(self, total: int | None) -> None:
        pass

    def advance(self, n: int = 1, rate: str = "") -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def stop(self) -> None:
        pass
