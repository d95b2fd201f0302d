"""Unbiased pass@k and the per-file numbers `palign eval` reports.

pass@k is the estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on
Code"): for a problem with n samples of which c are correct, the probability that at least
one of k samples drawn without replacement is correct, 1 - C(n-c, k) / C(n, k). It uses each
problem's *actual* sample count n, never a configured n that may not have been generated.

k > n is not defined (there are not k samples to draw). Such a problem is left out of that
k's average and counted in `skipped_for_k`, so a reader sees that pass@k covers fewer
problems instead of getting a silently different number.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import comb
from typing import Any

from palign_cli.errors import UsageError


def pass_at_k(n: int, c: int, k: int) -> float | None:
    """Unbiased pass@k for one problem; None when k > n (undefined).

    Computed with exact integers and one correctly rounded division, so it is stable for any
    n (no factorials in floating point, no cancellation beyond the final 1 - x).
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n:
        return None
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def parse_ks(text: str | None) -> tuple[int, ...] | None:
    """`--k 1,3` -> (1, 3); None (not given) means the default: 1 and the largest n seen."""
    if text is None or not text.strip():
        return None
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UsageError(f"--k must be positive integers separated by commas, got '{text}'") from None
    if not ks or ks[0] < 1:
        raise UsageError(f"--k values must be >= 1, got '{text}'")
    return tuple(ks)


def default_ks(max_n: int) -> tuple[int, ...]:
    return tuple(sorted({1, max_n})) if max_n >= 1 else (1,)


def record_pass_at(n: int, c: int, ks: Sequence[int] | None) -> dict[str, float | None]:
    """The per-record `pass_at` field: {"1": .., "3": ..}; null where k > n."""
    return {str(k): pass_at_k(n, c, k) for k in (ks or default_ks(n))}


@dataclass
class RecordStats:
    """What one graded record contributes to its file's summary."""

    n: int
    correct: int
    timeouts: int = 0
    errors: int = 0
    no_answer: int = 0
    possible_false_negatives: int = 0
    bad_gold: bool = False
    truncated: int | None = None  # samples cut by the length limit; None: finish reasons unknown
    too_long: int | None = None  # samples never generated: the prompt did not fit the context
    tokens: int | None = None  # output tokens summed; None: unknown
    flipped_by: list[str] = field(default_factory=list)  # second-opinion rule per flipped sample


class FileSummary:
    """Accumulates records of one input file; memory stays flat (counts only)."""

    def __init__(self, name: str):
        self.name = name
        self.n_problems = 0
        self.n_samples = 0
        self.correct = 0
        self.timeouts = self.errors = self.no_answer = 0
        self.possible_false_negatives = 0
        self.ungradable_golds = 0
        self.truncated = self.truncated_known = 0
        self.too_long = 0
        self.tokens = self.tokens_known = 0
        self.flipped_by: Counter[str] = Counter()
        self.by_nc: Counter[tuple[int, int]] = Counter()  # enough to compute pass@k for any k

    def add(self, s: RecordStats) -> None:
        self.n_problems += 1
        self.n_samples += s.n
        self.correct += s.correct
        self.timeouts += s.timeouts
        self.errors += s.errors
        self.no_answer += s.no_answer
        self.possible_false_negatives += s.possible_false_negatives
        self.ungradable_golds += s.bad_gold
        if s.truncated is not None:
            self.truncated += s.truncated
            self.truncated_known += s.n
        self.too_long += s.too_long or 0
        self.flipped_by.update(s.flipped_by)
        if s.tokens is not None:
            self.tokens += s.tokens
            self.tokens_known += s.n
        self.by_nc[(s.n, s.correct)] += 1

    @property
    def max_n(self) -> int:
        return max((n for n, _ in self.by_nc), default=0)

    def pass_at(self, k: int) -> tuple[float | None, int]:
        """(mean pass@k over problems with n >= k, problems skipped because n < k)."""
        total, used, skipped = 0.0, 0, 0
        for (n, c), count in self.by_nc.items():
            value = pass_at_k(n, c, k)
            if value is None:
                skipped += count
            else:
                total += value * count
                used += count
        return (total / used if used else None), skipped

    def result(self, ks: Sequence[int] | None = None) -> dict[str, Any]:
        """The numbers for the summary JSON and the table (shares are fractions in [0, 1])."""
        ks = ks or default_ks(self.max_n)
        out: dict[str, Any] = {"name": self.name, "n_problems": self.n_problems, "n_samples": self.n_samples}
        skipped: dict[str, int] = {}
        for k in ks:
            out[f"pass@{k}"], skipped[str(k)] = self.pass_at(k)
        out["skipped_for_k"] = skipped
        out["mean_acc"] = self.correct / self.n_samples if self.n_samples else None
        out["truncated_share"] = self.truncated / self.truncated_known if self.truncated_known else None
        out["mean_output_tokens"] = self.tokens / self.tokens_known if self.tokens_known else None
        out["timeouts"] = self.timeouts
        out["possible_false_negatives"] = self.possible_false_negatives
        out["ungradable_golds"] = self.ungradable_golds
        out["no_answer"] = self.no_answer
        out["errors"] = self.errors
        out["prompt_too_long"] = self.too_long
        out["flipped"] = sum(self.flipped_by.values())
        out["flipped_by"] = dict(sorted(self.flipped_by.items()))
        return out


RATES = ("mean_acc", "truncated_share", "mean_output_tokens")
COUNTS = ("n_problems", "n_samples", "timeouts", "possible_false_negatives", "ungradable_golds", "no_answer", "errors", "prompt_too_long", "flipped")


def average(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The average row, as in the paper's Table 1: each score is the plain mean over files
    (every benchmark weighs the same, however many problems it has); counts are summed."""
    rows = list(rows)
    out: dict[str, Any] = {"name": "average"}
    for key in COUNTS:
        out[key] = sum(r.get(key) or 0 for r in rows)
    flipped: Counter[str] = Counter()
    for r in rows:
        flipped.update(r.get("flipped_by") or {})
    out["flipped_by"] = dict(sorted(flipped.items()))
    score_keys = [k for r in rows for k in r if k.startswith("pass@")]
    for key in dict.fromkeys(sorted(score_keys, key=_k_order)):
        out[key] = _mean(r.get(key) for r in rows)
    for key in RATES:
        out[key] = _mean(r.get(key) for r in rows)
    return out


def _k_order(key: str) -> int:
    return int(key.split("@", 1)[1])


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
