"""answer_forms: the pure text shapes palign reads before math-verify (no grading here)."""

from __future__ import annotations

import pytest

from palign_cli.answer_forms import (
    boxed_spans,
    drop_dollar_signs,
    drop_thousands_separators,
    last_boxed,
    map_boxed,
    normalize_gold,
    normalize_prediction,
    strip_delimiters,
    strip_unit_words,
    unescape_doubled,
)


@pytest.mark.parametrize(
    "gold,expected",
    [
        ("$5$", "5"),
        ("$$5$$", "5"),
        (r"\(x^2\)", "x^2"),
        (r"\[ \frac{1}{2} \]", r"\frac{1}{2}"),
        (r"$\(5\)$", "5"),  # nested: unwrapped until bare
        (r"\$18", r"\$18"),  # an escaped dollar is a dollar sign
        (r"$\$18$", r"\$18"),
        (r"$5\$", r"$5\$"),  # the closing one is escaped: not a pair
        ("$a$ and $b$", "$a$ and $b$"),  # two formulas, not one
        ("$$", "$$"),
        ("5", "5"),
    ],
)
def test_strip_delimiters(gold, expected):
    assert strip_delimiters(gold) == expected


@pytest.mark.parametrize(
    "gold,expected",
    [
        (r"\\frac{1}{2}", r"\frac{1}{2}"),
        (r"\\{1,2\\}", r"\{1,2\}"),
        (r"\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),
        (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}"),  # once-escaped matrix
        (r"1 \\ 2", r"1 \\ 2"),  # a bare row break, nothing escaped twice
        (r"\frac12", r"\frac12"),
    ],
)
def test_unescape_doubled(gold, expected):
    assert unescape_doubled(gold) == expected


@pytest.mark.parametrize(
    "answer,expected",
    [
        ("10 weeks", "10"),
        ("10 cm^2", "10"),
        ("10 cm^{2}", "10"),
        ("4.5 km/h", "4.5"),
        ("12 square feet", "12"),
        ("1,000 dollars", "1,000"),
        ("2pi", "2pi"),  # mathematics, not a unit
        ("3 x", "3 x"),  # one letter: a product, not a unit
        ("3 sin", "3 sin"),
        (r"10\text{ cm}", r"10\text{ cm}"),  # math-verify reads \text units itself
        ("x + 10 weeks", "x + 10 weeks"),
        ("3 pm", "3 pm"),  # a time of day, not a unit
    ],
)
def test_strip_unit_words(answer, expected):
    assert strip_unit_words(answer) == expected


@pytest.mark.parametrize(
    "answer,expected",
    [
        (r"58\,500", "58500"),
        ("10 000", "10000"),
        (r"10{,}000", "10000"),
        (r"10,\!080", "10080"),
        (r"1\,234\,567.5", "1234567.5"),
        (r"10\;000", "10000"),
        (r"10~000", "10000"),
        ("10,000", "10,000"),  # a plain comma math-verify reads itself
        ("3.141 592", "3.141 592"),  # after a decimal point: not thousands
        ("1 2", "1 2"),
        ("12 34", "12 34"),
        (r"(1, 000)", r"(1, 000)"),
    ],
)
def test_drop_thousands_separators(answer, expected):
    assert drop_thousands_separators(answer) == expected


@pytest.mark.parametrize(
    "answer,expected",
    [(r"\$18", "18"), (r"\text{\$}18", "18"), (r"\mbox{\$} 18", " 18"), (r"18\$", "18"), ("18", "18"), (r"\textdollar 5", " 5")],
)
def test_drop_dollar_signs(answer, expected):
    assert drop_dollar_signs(answer) == expected


def test_boxes_are_found_with_balanced_braces():
    text = r"first \boxed{\frac{1}{2}} then \boxed {x^{2}} and a cut-off \boxed{3"
    assert [text[a:b] for a, b in boxed_spans(text)] == [r"\frac{1}{2}", "x^{2}"]
    assert last_boxed(text) == "x^{2}"
    assert last_boxed("no box") is None
    assert map_boxed(r"a \boxed{1} b \boxed{22}", lambda s: s * 2) == r"a \boxed{11} b \boxed{2222}"
    assert last_boxed(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"  # escaped braces do not count


def test_prediction_forms_touch_boxes_only():
    text = r"We pay \$58\,500 in total, so \boxed{\$58\,500}."
    assert normalize_prediction(text) == (r"We pay \$58\,500 in total, so \boxed{58500}.", ("dollar", "thousands"))
    assert normalize_prediction(r"\boxed{10 weeks}") == (r"\boxed{10 weeks}", ())
    assert normalize_prediction(r"\boxed{10 weeks}", unit="week") == (r"\boxed{10}", ("unit_words",))
    assert normalize_prediction(r"\boxed{10 week}", unit="week") == (r"\boxed{10}", ("unit_words",))
    assert normalize_prediction(r"\boxed{10 days}", unit="week") == (r"\boxed{10 days}", ())  # another unit stays


@pytest.mark.parametrize(
    "gold,unit",
    [("10 weeks", "week"), ("10 cm^2", "cm^2"), ("10 cm^{2}", "cm^2"), ("12 square feet", "square feet"),
     ("3 pm", None), ("3 PM", None), ("10", None), (r"$10 \\text{ weeks}$", None), ("$58\\,500$ dollars", None)],
)
def test_gold_unit(gold, unit):
    from palign_cli.answer_forms import gold_unit

    assert gold_unit(gold) == unit


def test_gold_forms_are_named():
    assert normalize_gold(r"$\\frac{1}{2}$") == (r"\frac{1}{2}", ("double_escaped", "delimiters"))
    assert normalize_gold(r"58\,500") == ("58500", ("thousands",))
    assert normalize_gold("10 weeks") == ("10", ("unit_words",))
    assert normalize_gold(r"\frac{1}{2}") == (r"\frac{1}{2}", ())
