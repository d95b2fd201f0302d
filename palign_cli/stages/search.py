"""Prefix search strategies as small resumable state machines.

A search never calls a judge itself: it says which k (number of units) it wants judged next
(`next_probe`), is told the verdict (`feed`), and says when it is done. That shape lets the
scheduler interleave many problems' searches and send one probe of each to the engine in a
single call, and lets a precomputed sufficiency curve answer the same questions; either way
the decisions are the ones the paper's sequential loop would take.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from palign_cli.errors import InputError, UsageError

P = TypeVar("P", bound="Searching")


@dataclass(frozen=True)
class Outcome:
    """Where a search ended: the chosen unit count and whether a judge called it sufficient."""

    k: int
    is_sufficient: bool | None  # None: no judge was asked (ratio)


class Search:
    """Base: subclasses set `_next` (the k wanted, or None when finished)."""

    name = "search"

    def __init__(self, m: int, total: int | None = None):
        """Search over k in 1..m; `total` (>= m) is the whole CoT's unit count, the fallback."""
        if m < 0:
            raise ValueError("m must be >= 0")
        self.m = m
        self.total = m if total is None else total
        self._next: int | None = None

    def next_probe(self) -> int | None:
        return self._next

    @property
    def done(self) -> bool:
        return self._next is None

    @property
    def reach(self) -> int:
        """The largest k this search may still ask about (0 when done): an engine holding the
        problem's prefix cache may drop what lies beyond it."""
        return 0 if self.done else self.m

    def feed(self, k: int, enough: bool) -> None:
        raise NotImplementedError

    def outcome(self) -> Outcome:
        raise NotImplementedError


class BinarySearch(Search):
    """The paper's search: lo=1, hi=m; ENOUGH -> best=mid, hi=mid-1; else lo=mid+1.

    Finds the smallest sufficient k when verdicts are monotone in k, with at most
    ceil(log2(m+1)) probes. No ENOUGH at all: the whole CoT, not sufficient.
    """

    name = "binary"

    def __init__(self, m: int, total: int | None = None):
        super().__init__(m, total)
        self.lo, self.hi = 1, m
        self.best: int | None = None
        self._advance()

    def _advance(self) -> None:
        self._next = (self.lo + self.hi) // 2 if self.lo <= self.hi else None

    @property
    def reach(self) -> int:
        return 0 if self.done else self.hi

    def feed(self, k: int, enough: bool) -> None:
        if k != self._next:
            raise ValueError(f"verdict for k={k}, but the search asked for k={self._next}")
        if enough:
            self.best, self.hi = k, k - 1
        else:
            self.lo = k + 1
        self._advance()

    def outcome(self) -> Outcome:
        if self.best is None:
            return Outcome(self.total, False)
        return Outcome(self.best, True)


class LinearSearch(Search):
    """The paper's "without binary search" ablation: scan k = 1, 2, ... up to the first ENOUGH."""

    name = "linear"

    def __init__(self, m: int, total: int | None = None):
        super().__init__(m, total)
        self.best: int | None = None
        self._next = 1 if m >= 1 else None

    def feed(self, k: int, enough: bool) -> None:
        if k != self._next:
            raise ValueError(f"verdict for k={k}, but the search asked for k={self._next}")
        if enough:
            self.best, self._next = k, None
        else:
            self._next = k + 1 if k < self.m else None

    def outcome(self) -> Outcome:
        if self.best is None:
            return Outcome(self.total, False)
        return Outcome(self.best, True)


class RatioSearch(Search):
    """Fixed-ratio truncation baseline: k = ceil(R * total) units, no judge at all."""

    def __init__(self, m: int, total: int | None = None, ratio: float = 0.5):
        super().__init__(m, total)
        self.ratio = ratio
        self.name = f"ratio:{ratio:g}"

    def feed(self, k: int, enough: bool) -> None:
        raise ValueError("a ratio search asks no judge")

    def outcome(self) -> Outcome:
        k = min(self.total, max(1, math.ceil(self.ratio * self.total - 1e-9)))
        return Outcome(k, None)


@dataclass(frozen=True)
class Strategy:
    """A parsed `--search` value; `make(m, total)` starts one problem's search."""

    kind: str
    ratio: float | None = None

    @property
    def name(self) -> str:
        return f"ratio:{self.ratio:g}" if self.kind == "ratio" else self.kind

    @property
    def needs_judge(self) -> bool:
        return self.kind != "ratio"

    def make(self, m: int, total: int | None = None) -> Search:
        if self.kind == "binary":
            return BinarySearch(m, total)
        if self.kind == "linear":
            return LinearSearch(m, total)
        return RatioSearch(m, total, self.ratio or 0.0)


def parse_strategy(text: str) -> Strategy:
    """`binary`, `linear` or `ratio:R` with 0 < R <= 1."""
    if text in ("binary", "linear"):
        return Strategy(text)
    if text.startswith("ratio:"):
        try:
            ratio = float(text.split(":", 1)[1])
        except ValueError:
            ratio = -1.0
        if 0 < ratio <= 1:
            return Strategy("ratio", ratio)
        raise UsageError(f"--search ratio:R needs 0 < R <= 1, got '{text}'")
    raise UsageError(f"--search must be binary, linear or ratio:R (e.g. ratio:0.5), got '{text}'")


def max_binary_probes(m: int) -> int:
    """The most probes a binary search over m units can take: ceil(log2(m + 1))."""
    return math.ceil(math.log2(m + 1)) if m > 0 else 0


class Searching(Protocol):
    """What the scheduler needs of a problem: its search state and a place for the trace."""

    search: Search
    trace: list[dict[str, Any]]


class Judge(Protocol):
    """Answers a batch of probes (problem, k), one trace entry each: `k`, `verdict`, and more."""

    def judge(self, probes: list[tuple[Any, int]]) -> list[dict[str, Any]]: ...


def schedule(
    problems: Iterable[P],
    judge: Judge | None,
    max_active: int,
    after_verdict: Callable[[P], None] | None = None,
) -> Iterator[list[P]]:
    """Run many searches at once; yield finished problems in input order, round by round.

    Up to `max_active` unfinished searches are in flight; each round sends the next probe of
    every one of them to the judge in a single call, and refills from the input as searches
    finish, so engine batches stay large while memory stays bounded. Output order is input
    order: a finished problem waits for the earlier ones (at most 4 x max_active are held).
    An InputError from the input stops the refilling; the searches in flight finish and are
    yielded, then the error is raised, so no finished work is lost. `after_verdict(problem)`
    runs after each verdict is fed (a judge releases or trims what it holds for the problem).
    """
    source = iter(problems)
    window: deque[P] = deque()
    cap = 4 * max_active
    exhausted = False
    error: InputError | None = None
    while True:
        running = sum(not p.search.done for p in window)
        while not exhausted and running < max_active and len(window) < cap:
            try:
                problem = next(source)
            except StopIteration:
                exhausted = True
            except InputError as exc:
                error, exhausted = exc, True
            else:
                window.append(problem)
                running += not problem.search.done
        waiting = [p for p in window if not p.search.done]
        if waiting:
            if judge is None:
                raise ValueError("a search asked for a judge, but none was given")
            entries = judge.judge([(p, p.search.next_probe()) for p in waiting])
            for problem, entry in zip(waiting, entries, strict=True):
                problem.trace.append(entry)
                problem.search.feed(entry["k"], entry["verdict"] == "ENOUGH")
                if after_verdict is not None:
                    after_verdict(problem)
        finished: list[P] = []
        while window and window[0].search.done:
            finished.append(window.popleft())
        if finished:
            yield finished
        if exhausted and not window:
            break
    if error is not None:
        raise error
