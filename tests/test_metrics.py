"""Unbiased pass@k (Chen et al. 2021) against hand-computed values and brute-force enumeration."""

from __future__ import annotations

from fractions import Fraction
from itertools import combinations
from math import comb

import pytest
from hypothesis import given
from hypothesis import strategies as st

from palign_cli.errors import UsageError
from palign_cli.metrics import (
    FileSummary,
    RecordStats,
    average,
    parse_ks,
    pass_at_k,
    record_pass_at,
)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (1, 1, 1, 1.0),
        (1, 0, 1, 0.0),
        (3, 1, 1, 1 / 3),
        (3, 1, 2, 2 / 3),  # 1 - C(2,2)/C(3,2) = 1 - 1/3
        (3, 1, 3, 1.0),  # n - c < k: every draw of 3 holds the correct one
        (3, 2, 2, 1.0),
        (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
        (8, 2, 4, 11 / 14),  # 1 - C(6,4)/C(8,4) = 1 - 15/70
        (10, 3, 1, 0.3),
        (5, 0, 3, 0.0),
        (5, 5, 3, 1.0),
        (16, 1, 8, 0.5),  # 1 - C(15,8)/C(16,8) = 1 - 8/16
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("n,c,k", [(3, 0, 4), (2, 2, 3), (1, 1, 2)])
def test_k_above_n_is_undefined(n, c, k):
    assert pass_at_k(n, c, k) is None


def brute_force(n: int, c: int, k: int) -> Fraction:
    """Share of all k-subsets of n samples (c of them correct) that hold a correct one."""
    labels = [1] * c + [0] * (n - c)
    subsets = list(combinations(range(n), k))
    return Fraction(sum(any(labels[i] for i in s) for s in subsets), len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_equals_enumeration_over_all_k_subsets(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_force(n, c, k)), rel=1e-12, abs=1e-15), (n, c, k)


@pytest.mark.parametrize("n,c,k", [(1000, 1, 1), (1000, 1, 500), (200, 100, 100), (500, 3, 250), (1024, 1000, 16)])
def test_pass_at_k_is_exact_for_large_n(n, c, k):
    exact = 1 - Fraction(comb(n - c, k), comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n))))
def test_pass_at_1_is_the_share_correct_and_pass_at_k_grows_with_k(nc):
    n, c = nc
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(a <= b + 1e-15 for a, b in zip(values, values[1:]))
    assert all(0.0 <= v <= 1.0 for v in values)


@pytest.mark.parametrize("n,c,k", [(3, 4, 1), (3, -1, 1), (3, 1, 0)])
def test_invalid_arguments_raise(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@pytest.mark.parametrize(
    "text,expected",
    [(None, None), ("", None), ("1", (1,)), ("1,3", (1, 3)), ("3, 1,3", (1, 3)), ("8,1,", (1, 8))],
)
def test_parse_ks(text, expected):
    assert parse_ks(text) == expected


@pytest.mark.parametrize("text", ["0", "1,-2", "a", "1;3"])
def test_parse_ks_rejects_bad_values(text):
    with pytest.raises(UsageError):
        parse_ks(text)


def test_record_pass_at_default_is_1_and_n_and_null_above_n():
    assert record_pass_at(3, 1, None) == {"1": pytest.approx(1 / 3), "3": 1.0}
    assert record_pass_at(1, 1, None) == {"1": 1.0}
    assert record_pass_at(2, 1, (1, 3)) == {"1": 0.5, "3": None}


def test_file_summary_uses_actual_sample_counts_and_reports_skips():
    s = FileSummary("bench")
    s.add(RecordStats(n=3, correct=1, truncated=1, tokens=300))
    s.add(RecordStats(n=3, correct=3, truncated=0, tokens=150, timeouts=1))
    s.add(RecordStats(n=2, correct=0, truncated=2, tokens=50, possible_false_negatives=1, bad_gold=True))
    r = s.result((1, 3))
    assert r["n_problems"] == 3 and r["n_samples"] == 8
    # pass@1 is the mean over problems of c/n; mean_acc is over samples: they differ here
    assert r["pass@1"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert r["mean_acc"] == pytest.approx(4 / 8)
    # pass@3 is undefined for the 2-sample problem: left out, and counted
    assert r["pass@3"] == pytest.approx((1.0 + 1.0) / 2)
    assert r["skipped_for_k"] == {"1": 0, "3": 1}
    assert r["truncated_share"] == pytest.approx(3 / 8)
    assert r["mean_output_tokens"] == pytest.approx(500 / 8)
    assert (r["timeouts"], r["possible_false_negatives"], r["ungradable_golds"]) == (1, 1, 1)


def test_file_summary_defaults_and_unknowns():
    s = FileSummary("ref")
    s.add(RecordStats(n=4, correct=2))
    s.add(RecordStats(n=2, correct=2))
    r = s.result()  # default ks: 1 and the largest n seen
    assert [k for k in r if k.startswith("pass@")] == ["pass@1", "pass@4"]
    assert r["pass@4"] == pytest.approx(1.0) and r["skipped_for_k"]["4"] == 1
    assert r["truncated_share"] is None and r["mean_output_tokens"] is None
    assert FileSummary("empty").result((1,))["pass@1"] is None


def test_average_is_the_plain_mean_over_files_and_sums_counts():
    rows = [
        {"name": "a", "n_problems": 30, "n_samples": 90, "pass@1": 0.2, "pass@3": 0.4, "mean_acc": 0.2, "truncated_share": None, "mean_output_tokens": None, "timeouts": 1},
        {"name": "b", "n_problems": 500, "n_samples": 1500, "pass@1": 0.6, "pass@3": None, "mean_acc": 0.6, "truncated_share": 0.1, "mean_output_tokens": 100.0, "timeouts": 2},
    ]
    avg = average(rows)
    assert avg["pass@1"] == pytest.approx(0.4)  # not weighted by problem count
    assert avg["pass@3"] == pytest.approx(0.4)  # only files that have it
    assert avg["truncated_share"] == pytest.approx(0.1)
    assert (avg["n_problems"], avg["n_samples"], avg["timeouts"]) == (530, 1590, 3)
