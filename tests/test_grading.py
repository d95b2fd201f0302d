"""Grading with real math-verify in the worker pool: a table of cases, timeouts, real-data agreement."""

from __future__ import annotations

import os
import signal
import time

import pytest

import palign_cli.grading as grading
from palign_cli.grading import Grade, Grader, grade_pair, possible_false_negative

POWER_TOWER = r"The answer is \boxed{9^{9^{9^{9^{9}}}}}"


@pytest.fixture(scope="module")
def grader():
    """A generous limit: these tests check verdicts and order, and a machine busy with other
    tests must not turn a starved worker into a `timeout` (the limit has tests of its own)."""
    with Grader(workers=2, timeout=30.0) as g:
        yield g


CASES = [
    # gold, completion, label, status
    (r"\frac{1}{2}", r"so \boxed{\frac12}", 1, "ok"),
    (r"\frac{1}{2}", r"so \boxed{0.5}", 1, "ok"),
    (r"\frac{1}{2}", r"\boxed{\dfrac{1}{2}}", 1, "ok"),
    (r"\frac 34", r"\boxed{3/4}", 1, "ok"),
    (r"\frac{1}{2}", r"\boxed{\frac{1}{3}}", 0, "ok"),
    ("25", r"\boxed{025}", 1, "ok"),  # AIME answers written with leading zeros
    ("025", r"The answer is \boxed{25}.", 1, "ok"),
    ("204", r"\boxed{205}", 0, "ok"),
    ("10{,}000", r"\boxed{10000}", 1, "ok"),  # MATH writes thousands with {,}
    ("1,000", r"\boxed{1000}", 1, "ok"),
    ("2", r"\boxed{2.0}", 1, "ok"),
    (r"\sqrt{2}", r"\boxed{1.41}", 0, "ok"),
    (r"\sqrt{2}", r"\boxed{\sqrt 2}", 1, "ok"),
    ("-2 + 7i", r"\boxed{-2+7i}", 1, "ok"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\boxed{(3, \frac{\pi}{2})}", 1, "ok"),
    ("(1,2)", r"\boxed{(2,1)}", 0, "ok"),  # a tuple is ordered
    (r"\{1,2\}", r"\boxed{\{2,1\}}", 1, "ok"),  # a set is not
    (r"3 \pm 2 \sqrt{2}", r"\boxed{3 + 2\sqrt{2}, 3 - 2\sqrt{2}}", 1, "ok"),
    ("x \\in [2,5)", r"\boxed{[2,5)}", 1, "ok"),
    ("y = 2x + 3", r"\boxed{y=2x+3}", 1, "ok"),
    ("90^\\circ", r"\boxed{90}", 1, "ok"),
    ("10\\%", r"\boxed{10\%}", 1, "ok"),
    (r"\$18.90", r"\boxed{18.90}", 1, "ok"),
    ("4343_6", r"\boxed{4343_{6}}", 1, "ok"),
    # text answers
    (r"\text{east}", r"\boxed{\text{east}}", 1, "ok"),
    (r"\text{east}", r"\boxed{\text{west}}", 0, "ok"),
    (r"\text{(C)}", r"\boxed{C}", 1, "ok"),
    ("Evelyn", r"\boxed{\text{Evelyn}}", 1, "ok"),
    # \boxed wins over other candidates, before or after it
    ("5", r"I first thought 3. \boxed{5}. Checking: 7 apples", 1, "ok"),
    ("5", r"The final answer is 7. But wait: \boxed{5}", 1, "ok"),
    ("7", r"\boxed{5}. The final answer is 7", 0, "ok"),
    # unboxed prose answers still extract
    ("3", "Therefore, the value of n is 3.", 1, "ok"),
    # nothing to grade
    ("5", "I do not know.", 0, "no_answer"),
    ("$", r"\boxed{5}", 0, "bad_gold"),
    (r"\text{}", r"\boxed{5}", 0, "bad_gold"),
]


@pytest.mark.parametrize("gold,text,label,status", CASES)
def test_grade_table_in_process(gold, text, label, status):
    grade = grade_pair(gold, text)
    assert (grade.label, grade.status) == (label, status), grade


def test_pool_grades_the_table_in_order(grader):
    grades = grader.grade([(g, t) for g, t, _, _ in CASES])
    assert [(g.label, g.status) for g in grades] == [(label, status) for _, _, label, status in CASES]


def test_pred_is_the_extracted_answer_text(grader):
    grades = grader.grade([("25", r"so \boxed{025}"), ("5", "nothing here"), (r"\frac12", r"\boxed{\frac{1}{2}}")])
    assert [g.pred for g in grades] == ["025", None, r"\frac{1}{2}"]


def test_many_pairs_come_back_in_input_order(grader):
    pairs = [(str(i), rf"\boxed{{{i if i % 3 else i + 1}}}") for i in range(60)]
    labels = [g.label for g in grader.grade(pairs)]
    assert labels == [0 if i % 3 == 0 else 1 for i in range(60)]


def test_power_tower_times_out_within_the_limit_and_the_run_continues():
    with Grader(workers=2, timeout=2.0) as g:
        g.grade([("1", "1")] * 2)  # workers up: time only the grading
        started = time.monotonic()
        grades = g.grade([("5", POWER_TOWER), ("5", r"\boxed{5}"), ("4", r"\boxed{2+2}")])
        elapsed = time.monotonic() - started
        assert [gr.status for gr in grades] == ["timeout", "ok", "ok"]
        assert [gr.label for gr in grades] == [0, 1, 1]
        assert elapsed < 2.0 + 1.5, elapsed
        assert g.timeouts == 1
        assert g.grade([("7", r"\boxed{7}")])[0].label == 1  # still serving


def test_hard_limit_kills_a_worker_that_no_signal_reaches(monkeypatch):
    """With the worker's own alarm pushed past the limit, only the parent's kill can end the
    power tower (sympy is stuck in one C call to int pow): the sample is `timeout` on time."""
    monkeypatch.setattr(grading, "SOFT_SHARE", 100.0)
    with Grader(workers=1, timeout=1.5) as g:
        g.grade([("1", "1")])
        started = time.monotonic()
        grades = g.grade([("5", POWER_TOWER), ("5", r"\boxed{5}")])
        elapsed = time.monotonic() - started
        assert [gr.status for gr in grades] == ["timeout", "ok"]
        assert g.restarts == 1 and g.timeouts == 1
        assert elapsed < 1.5 + 3.0, elapsed  # the limit plus a fresh worker's start


def test_a_dead_idle_worker_is_replaced(grader):
    victim = grader._pool[0]
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.stopped(10.0)
    grades = grader.grade([("5", r"\boxed{5}")] * 6)
    assert [g.status for g in grades] == ["ok"] * 6, (grades, grader.timeouts, grader.restarts)


def test_grader_needs_a_positive_timeout():
    with pytest.raises(ValueError):
        Grader(timeout=0)


WRONG = Grade(0, None, "ok")


@pytest.mark.parametrize(
    "gold,text,grade,expected",
    [
        ("3", "Therefore, the value of n is 3.", WRONG, True),
        ("44", "so I'm confident that 44 is the correct answer.", Grade(0, "0", "ok"), True),
        (r"\text{east}", "So, the final answer is east.", WRONG, True),
        ("x = 3", "hence x=3", WRONG, True),
        ("3", "Therefore, the value of n is 3.", Grade(1, "3", "ok"), False),  # graded right
        ("3", "the answer is 13", WRONG, False),  # inside a longer number
        ("3", "the answer is 3.5", WRONG, False),
        ("3", "we get 3 here." + " and so on" * 100, WRONG, False),  # only the end counts
        ("", "anything", WRONG, False),
    ],
)
def test_possible_false_negative(gold, text, grade, expected):
    assert possible_false_negative(gold, text, grade) is expected


# Agreement with the shared graded files: tests/test_grading_cases.py (the regression guard).


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _gone(pid: int, within: float = 10.0) -> bool:
    """The process ended within `within` s (a zombie not yet reaped by init counts as ended)."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_workers_are_forks_of_one_warm_server_and_all_end_on_close(monkeypatch):
    """One interpreter imports math-verify; each worker, and each replacement after a hard
    timeout, is a fork of it (a fork, not a fresh import). Closing ends them all."""
    monkeypatch.setattr(grading, "SOFT_SHARE", 100.0)  # only the parent's kill ends the power tower
    with Grader(workers=2, timeout=1.5) as g:
        g.grade([("1", "1")] * 2)
        server = g._server.process.pid
        first = [w.pid for w in g._pool]
        assert all(_ppid(pid) == server for pid in first) and len(set(first)) == 2
        grades = g.grade([("5", POWER_TOWER), ("5", r"\boxed{5}")])
        assert [gr.status for gr in grades] == ["timeout", "ok"] and g.restarts >= 1
        now = [w.pid for w in g._pool]
        assert set(now) != set(first) and all(_ppid(pid) == server for pid in now)
        assert any(_gone(pid, 2.0) for pid in first)  # the stuck one was killed and reaped
    assert all(_gone(pid) for pid in [server, *now])


def test_killing_the_server_ends_its_workers():
    """A worker never outlives its server (PR_SET_PDEATHSIG), so nothing is left spinning."""
    g = Grader(workers=2, timeout=5.0)
    with g:
        g.grade([("1", "1")] * 2)
        pids = [w.pid for w in g._pool]
        g._server.process.kill()
        assert all(_gone(pid) for pid in pids)


def test_a_server_without_math_verify_is_a_one_line_error(tmp_path, monkeypatch):
    """The server imports math-verify; where it cannot, grading stops with the fix, not a hang."""
    from palign_cli.errors import BackendUnavailable

    stub = tmp_path / "math_verify"
    stub.mkdir()
    (stub / "__init__.py").write_text("raise ImportError('no math-verify here')\n")
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    with pytest.raises(BackendUnavailable, match=r"pip install 'math-verify"):
        with Grader(workers=1, timeout=5.0) as g:
            g.grade([("1", r"\boxed{1}")])


def test_a_task_whose_worker_is_killed_from_outside_is_retried_once(monkeypatch):
    """A worker that dies mid-task may have died of something else: its task goes to a fresh
    worker once (here it is a power tower again, so the hard limit ends it as `timeout`)."""
    import threading

    monkeypatch.setattr(grading, "SOFT_SHARE", 100.0)
    with Grader(workers=1, timeout=3.0) as g:
        g.grade([("1", "1")])
        victim = g._pool[0].pid
        threading.Timer(0.5, os.kill, (victim, signal.SIGKILL)).start()
        grades = g.grade([("5", POWER_TOWER), ("5", r"\boxed{5}")])
        assert [gr.status for gr in grades] == ["timeout", "ok"]
        assert g.restarts == 2 and g.timeouts == 1  # the kill from outside, then the hard limit
