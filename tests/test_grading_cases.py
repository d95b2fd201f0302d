"""Issue 12's case table, graded by the real math-verify: one row per answer shape, written
from each class's description and taken from real outputs, plus the regression guard on the
shared graded files (every label there equals the recorded one, or a known, explained one)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from conftest import data_file

from palign_cli.grading import Grader, grade_pair

FIXTURES = Path(__file__).parent / "fixtures"
NEAREST_TENTH = "What is the distance? Express your answer as a decimal to the nearest tenth."


def _real(name: str, row_id: str, sample: int = 0) -> str:
    """A real completion from ../shared/data, tail only (where its answer is)."""
    with open(data_file(name), "rb") as f:
        for raw in f:
            row = orjson.loads(raw)
            if row.get("id") == row_id:
                text = row["responses"][sample] if "responses" in row else row["solution"]
                return text[-400:]
    raise AssertionError(f"{row_id} not in {name}")


QWEN = "qwen25math_math100_graded_samples.jsonl"

# (class, gold, completion, expected label, rule that must flip it or None); question None.
CASES = [
    # 1. a gold that carries its own math delimiters is not wrapped again; \$ is a dollar sign
    ("1", r"$\frac{1}{2}$", r"so \boxed{\frac12}", 1, None),
    ("1", r"\(\frac{1}{2}\)", r"\boxed{0.5}", 1, None),
    ("1", r"\[\frac{1}{2}\]", r"\boxed{\frac12}", 1, None),  # was 0: `$\[..\]$` parses as nothing
    ("1", r"\[ x^2 + 1 \]", r"\boxed{x^2+1}", 1, None),  # was 0
    ("1", r"$$5$$", r"\boxed{5}", 1, None),
    ("1", r"\[5\]", r"\boxed{6}", 0, None),
    ("1", r"\$18.90", r"\boxed{18.90}", 1, None),
    ("1", r"$\$18$", r"\boxed{18}", 1, None),
    ("1", r"\$5", r"\boxed{6}", 0, None),
    # 2. thousands separators inside \boxed{}
    ("2", "58500", r"The total is \boxed{58\,500}.", 1, None),  # was 0: read as 558
    ("2", "58,500", r"\boxed{58\,500}", 1, None),  # was 0
    ("2", "558", r"\boxed{58\,500}", 0, None),  # the old misreading is gone
    ("2", "10000", r"\boxed{10 000}", 1, None),  # was 0
    ("2", "10000", r"\boxed{10{,}000}", 1, None),
    ("2", "1234567", r"\boxed{1\,234\,567}", 1, None),  # was 0
    ("2", "10000", r"\boxed{10\;000}", 1, None),  # was 0
    ("2", "3.14", r"\boxed{3.141 592}", 0, None),  # digits after a point are not grouped thousands
    # 3. a bare unit word after a number in the gold
    ("3", "10 weeks", r"\boxed{10}", 1, None),  # was 0: 10*w*e*e*k*s
    ("3", "10 cm^2", r"So the area is \boxed{10}.", 1, None),  # was 0
    ("3", "10 weeks", r"\boxed{10 \text{ weeks}}", 1, None),  # was 0
    ("3", "10 weeks", r"\boxed{10 weeks}", 1, None),  # the gold's own form still matches
    ("3", "12 square feet", r"\boxed{12}", 1, None),
    ("3", "10 weeks", r"\boxed{11}", 0, None),

    # 4. a gold escaped twice
    ("4", r"\\frac{1}{2}", r"\boxed{\frac12}", 1, None),
    ("4", r"\\{1,2\\}", r"\boxed{\{2,1\}}", 1, None),  # was 0
    ("4", r"\\left( 3, \\frac{\\pi}{2} \\right)", r"\boxed{(3, \frac{\pi}{2})}", 1, None),
    ("4", r"\\frac{1}{2}", r"\boxed{\frac13}", 0, None),
    ("4", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}", 1, None),  # a row break is not an escape
    # 5. \$ in a prediction
    ("5", "18", r"\boxed{\$18}", 1, None),
    ("5", "18", r"\boxed{\text{\$}18}", 1, None),  # was 0
    ("5", "18", r"\boxed{\$19}", 0, None),
    ("5", "1800", r"\boxed{\$1,800}", 1, None),
    # 6. math-verify's blind spots, second-opinioned
    ("6", r"2\frac{1}{2}", r"\boxed{2 1/2}", 1, "mixed_number"),
    ("6", r"\frac{5}{2}", r"\boxed{2 1/2}", 1, "mixed_number"),
    ("6", "1", r"\boxed{2 1/2}", 0, None),  # never 2 * 1/2
    ("6", r"2\frac{1}{2}", r"\boxed{\frac52}", 1, None),  # math-verify's own yes
    ("6", "2i", r"\boxed{(1+i)^2}", 1, "imaginary_unit"),
    ("6", "-1", r"\boxed{i^2}", 1, "imaginary_unit"),
    ("6", "3-4i", r"\boxed{3 - 4\,i}", 1, "imaginary_unit"),
    ("6", "1+i", r"\boxed{1+\mathrm{i}}", 1, "imaginary_unit"),
    ("6", "-i", r"\boxed{\frac{1}{i}}", 1, "imaginary_unit"),
    ("6", "1-i", r"\boxed{(1+i)^2}", 0, None),
    ("6", r"\text{4:30 p.m.}", r"\boxed{4:30}", 1, "time_of_day"),
    ("6", r"\text{4:30 p.m.}", r"\boxed{16:30}", 1, "time_of_day"),
    ("6", r"\text{4:30 p.m.}", r"\boxed{4:30 \text{ p.m.}}", 1, "time_of_day"),
    ("6", r"\text{4:30 p.m.}", r"\boxed{4:30 \text{ a.m.}}", 0, None),
    ("6", "9:15", r"\boxed{9:50}", 0, None),
    ("6", r"\frac{1}{2}", r"\boxed{\sin 30^\circ}", 1, "trig_degrees"),
    ("6", r"\cos 60^\circ", r"\boxed{\frac12}", 1, "trig_degrees"),
    ("6", r"\frac{\sqrt{3}}{2}", r"\boxed{\sin 30^\circ}", 0, None),
    ("6", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{(1, 2)}", 1, "matrix_vs_list"),
    ("6", r"\begin{pmatrix} -1 & 2 \end{pmatrix}", r"\boxed{[-1, 2]}", 1, "matrix_vs_list"),
    ("6", r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}", r"\boxed{[[1,2],[3,4]]}", 1, "matrix_vs_list"),
    ("6", r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{(2, 1)}", 0, None),
    ("6", r"2.5\times10^{-3}", r"\boxed{2.5e-3}", 1, "scientific_notation"),
    ("6", "0.0025", r"\boxed{2.5e-3}", 1, "scientific_notation"),
    ("6", "0.0025", r"\boxed{2.5E-3}", 1, None),  # math-verify's own yes (capital E)
    ("6", "2500", r"\boxed{2.5e-3}", 0, None),
    ("6", r"\frac{1}{3}", r"\boxed{0.333}", 0, None),  # no tolerance is stated: no looser rounding
    ("6", r"\approx 3.14", r"\boxed{3.1416}", 1, "stated_tolerance"),
    ("6", r"\approx 3.14", r"\boxed{3.2}", 0, None),
]

# The same, with the problem text: a precision the problem states is the only tolerance.
QUESTION_CASES = [
    ("2.5", r"\boxed{2.47}", NEAREST_TENTH, 1, "stated_tolerance"),
    ("2.5", r"\boxed{2.47}", "What is the distance?", 0, None),
    ("2.5", r"\boxed{2.6}", NEAREST_TENTH, 0, None),
    ("2.5", r"\boxed{2.55}", NEAREST_TENTH, 0, None),  # exactly between two roundings: no
    ("13", r"\boxed{12.8}", "Round your answer to the nearest whole number.", 1, "stated_tolerance"),
    ("3.14", r"\boxed{3.1416}", "Give your answer to two decimal places.", 1, "stated_tolerance"),
    (r"\frac{1}{3}", r"\boxed{0.333}", NEAREST_TENTH, 0, None),  # the gold is not a decimal
]

# Rows taken from real outputs in ../shared/data (gold, the completion's tail, label, rule).
REAL = [
    # Qwen2.5-Math sample: gold `\text{4:30 p.m.}`, boxed `4:30 \text{ p.m.}` (the harness said wrong)
    (r"\text{4:30 p.m.}", ("qwen", "qwen25math-math100-003", 0), 1, "time_of_day"),
    # Qwen2.5-Math sample the harness got wrong: gold `10{,}000`, boxed 10000
    ("10{,}000", ("qwen", "qwen25math-math100-072", 7), 1, None),
    # MATH-500 reference solutions: thousands with `,\!` and a dollar sign inside the box
    ("10,\\!080", ("math500", "test/counting_and_probability/508.json", 0), 1, None),
    ("\\$32,\\!348", ("math500", "test/algebra/2626.json", 0), 1, None),
]


@pytest.mark.parametrize("cls,gold,text,label,rule", CASES, ids=[f"class{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_case_table(cls, gold, text, label, rule):
    grade = grade_pair(gold, text)
    assert (grade.label, grade.flipped_by, grade.status) == (label, rule, "ok"), grade


@pytest.mark.parametrize("gold,text,question,label,rule", QUESTION_CASES)
def test_stated_precision_is_the_only_tolerance(gold, text, question, label, rule):
    grade = grade_pair(gold, text, question=question)
    assert (grade.label, grade.flipped_by) == (label, rule), grade


def _real_text(where: tuple[str, str, int]) -> str:
    name, row_id, sample = where
    if name == "qwen":
        return _real(QWEN, row_id, sample)
    with open(data_file("math500.jsonl"), "rb") as f:
        for raw in f:
            row = orjson.loads(raw)
            if row["id"] == row_id:
                return row["solution"]
    raise AssertionError(row_id)


@pytest.mark.parametrize("gold,where,label,rule", REAL, ids=[r[1][1] for r in REAL])
def test_real_outputs(gold, where, label, rule):
    grade = grade_pair(gold, _real_text(where))
    assert (grade.label, grade.flipped_by) == (label, rule), grade


def test_strict_turns_every_flip_off_and_nothing_else():
    """--strict: the rows the second opinion flips are wrong, every other verdict is the same
    (fixes 1-5 are not second opinions: they apply under --strict too)."""
    for _, gold, text, label, rule in CASES:
        strict = grade_pair(gold, text, strict=True)
        assert (strict.label, strict.flipped_by) == ((0, None) if rule else (label, None)), (gold, text, strict)


def test_the_pool_carries_flips_and_strict(tmp_path):
    pairs = [(gold, text) for _, gold, text, _, _ in CASES] + [(g, t, q) for g, t, q, _, _ in QUESTION_CASES]
    expected = [(label, rule) for *_, label, rule in CASES] + [(label, rule) for *_, label, rule in QUESTION_CASES]
    with Grader(workers=2, timeout=10.0) as grader:
        assert [(g.label, g.flipped_by) for g in grader.grade(pairs)] == expected
    with Grader(workers=1, timeout=10.0, strict=True) as grader:
        assert [(g.label, g.flipped_by) for g in grader.grade(pairs)] == [(0 if rule else label, None) for label, rule in expected]


# --- regression guard: the shared graded files ------------------------------------------------------


def _graded_samples():
    """(key, gold, text, question, recorded label) for the Qwen2.5-Math and Sky-T1 files."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from grading_agreement import QWEN as Q
    from grading_agreement import SKYT1, samples

    for name in (Q, SKYT1):
        data_file(name)  # a missing file is a failure under PALIGN_REQUIRE_REAL
        for s in samples(name):
            yield f"{s['id']}#{s['i']}", s["gold"], s["text"], s["question"], s["label"]


def test_labels_on_the_shared_graded_files_change_only_where_explained():
    """Every one of the 1,370 recorded labels is reproduced, except the disagreements listed
    with their reason in fixtures/grading_known_disagreements.json (harness mistakes, 8 labels
    the time_of_day second opinion flips right, a few prose answers math-verify misreads).
    Any new difference, or a listed one that went away, fails: update the list with a why."""
    known = json.loads((FIXTURES / "grading_known_disagreements.json").read_text())
    rows = list(_graded_samples())
    assert len(rows) == 1370
    with Grader(workers=2, timeout=10.0) as grader:
        grades = grader.grade([(g, t, q) for _, g, t, q, _ in rows])
    differ = {key: {"recorded": y, "palign": g.label, "flipped_by": g.flipped_by}
              for (key, *_, y), g in zip(rows, grades) if g.label != y}
    assert all(g.status == "ok" for g in grades)
    assert differ == {key: {k: v for k, v in row.items() if k != "why"} for key, row in known.items()}
    assert all(row["why"] for row in known.values())
