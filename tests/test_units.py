"""Units: every prefix is an exact slice of the CoT; sentences keep math, decimals, abbreviations whole."""

from __future__ import annotations

import json
import re

import pytest
from conftest import data_file
from hypothesis import given, settings
from hypothesis import strategies as st

from palign_cli.units import UNIT_KINDS, math_spans, split_units


@pytest.mark.parametrize(
    "text,pieces",
    [
        ("One. Two? Three! Four", ["One.", " Two?", " Three!", " Four"]),
        ("Pi is 3.14. Next.", ["Pi is 3.14.", " Next."]),
        ("It costs 2.50 or 1.5e3 dollars.", ["It costs 2.50 or 1.5e3 dollars."]),
        ("Use e.g. this one. Then i.e. that.", ["Use e.g. this one.", " Then i.e. that."]),
        ("Dr. Fu met Mr. Li vs. Ms. Wu. Done.", ["Dr. Fu met Mr. Li vs. Ms. Wu.", " Done."]),
        ("See Fig. 3 and Eq. 2. Next.", ["See Fig. 3 and Eq. 2.", " Next."]),
        ("So $a. b$ holds. Next.", ["So $a. b$ holds.", " Next."]),
        ("So $$x. y$$ holds. Next.", ["So $$x. y$$ holds.", " Next."]),
        ("Then \\(x. y\\). Done.", ["Then \\(x. y\\).", " Done."]),
        ("We get\n\\[\na. b\n\\]\nNext.", ["We get", "\n\\[\na. b\n\\]", "\nNext."]),
        ("A \\begin{align} x. y \\\\\n z \\end{align} B. C", ["A \\begin{align} x. y \\\\\n z \\end{align} B.", " C"]),
        ("It costs $5. Then $6. Ok.", ["It costs $5.", " Then $6.", " Ok."]),
        ("Line one\nLine two.\n\nPara", ["Line one", "\nLine two.", "\n\nPara"]),
        ("1. First.\n2. Second.", ["1. First.", "\n2. Second."]),
        ("So 5! = 120 and n! ways. Wow! Yes.", ["So 5! = 120 and n! ways.", " Wow!", " Yes."]),
        ('He said "stop." Then left.', ['He said "stop."', " Then left."]),
        ("Wait... really? Yes.", ["Wait...", " really?", " Yes."]),
        ("Ends with space.  \n\n  ", ["Ends with space.  \n\n  "]),
        ("  Leading. x", ["  Leading.", " x"]),
        ("No break", ["No break"]),
    ],
)
def test_sentence_units(text, pieces):
    units = split_units(text, "sentence")
    assert units.pieces() == pieces
    assert "".join(units.pieces()) == text


@pytest.mark.parametrize(
    "unit,text,pieces",
    [
        ("line", "a\nb\n\nc", ["a", "\nb", "\n\nc"]),
        ("line", "a. b\nc\n", ["a. b", "\nc\n"]),
        ("line", "a\r\nb", ["a", "\r\nb"]),
        ("paragraph", "a\nb\n\nc\n \nd", ["a\nb", "\n\nc", "\n \nd"]),
        ("paragraph", "one paragraph. two sentences.", ["one paragraph. two sentences."]),
        # the reference's `split(". ")`: same count and cut points, exact text, period kept
        ("reference", "a. b. c", ["a.", " b.", " c"]),
        ("reference", "x = 3.14. y\n\nz. w.", ["x = 3.14.", " y\n\nz.", " w."]),
        ("reference", "no split here", ["no split here"]),
    ],
)
def test_other_units(unit, text, pieces):
    assert split_units(text, unit).pieces() == pieces


def test_unknown_unit_is_an_error():
    with pytest.raises(ValueError, match="unknown unit"):
        split_units("a. b", "word")


@pytest.mark.parametrize(
    "text,spans",
    [
        ("a $x$ b", [(2, 5)]),
        ("costs $5 and $6", []),
        ("\\(a\\) and \\[b\\]", [(0, 5), (10, 15)]),
        ("$$a$$ $b$", [(0, 5), (6, 9)]),
        ("unclosed \\( here", []),
        ("$a\n\nb$", []),
        ("escaped \\$ sign $x$", [(16, 19)]),
    ],
)
def test_math_spans(text, spans):
    assert math_spans(text) == spans


PARTS = list("ab1. \n?!$\\()[]{}e.g") + [". ", "\n\n", "3.14", "$x$", "\\(", "\\)", "\\[", "\\]", "Dr. "]
TEXT = st.lists(st.sampled_from(PARTS), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=TEXT.filter(lambda t: t.strip()), unit=st.sampled_from(UNIT_KINDS))
def test_units_tile_the_text(text, unit):
    units = split_units(text, unit)
    ends = list(units.ends)
    assert ends == sorted(set(ends)) and ends[-1] == len(text) and ends[0] > 0
    assert "".join(units.pieces()) == text
    for k in range(1, len(units) + 1):
        assert units.prefix(k) == text[: units.end(k)]
    if unit != "reference":
        assert all(piece.strip() for piece in units.pieces())


def test_reference_count_matches_split():
    text = "A. B. C.\n\nD. E"
    assert len(split_units(text, "reference")) == len(text.split(". "))


def real_cots() -> list[str]:
    with open(data_file("teacher_cots_sample.jsonl"), encoding="utf-8") as f:
        return [json.loads(line)["long_cot"] for line in f]


DECIMAL_CUT = re.compile(r"\d\.$")


def test_real_cots():
    cots = real_cots()
    assert len(cots) == 40
    for cot in cots:
        spans = math_spans(cot)
        units = split_units(cot, "sentence")
        assert "".join(units.pieces()) == cot
        assert len(units) > 5
        for end in units.ends[:-1]:
            assert not any(s < end < e for s, e in spans), cot[end - 40:end + 40]
            assert not (DECIMAL_CUT.search(cot[:end]) and cot[end:end + 1].isdigit())
            assert cot[end - 1] in ".?!\"')]\u201d\u2019" or cot[end] in "\r\n", repr(cot[end - 20:end + 5])
        for kind in ("line", "paragraph", "reference"):
            assert "".join(split_units(cot, kind).pieces()) == cot
        assert len(split_units(cot, "reference")) == len(cot.split(". "))
    # sentences are finer than paragraphs on real text
    assert sum(len(split_units(c)) for c in cots) > sum(len(split_units(c, "paragraph")) for c in cots)
