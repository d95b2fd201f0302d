"""Grade completions against gold answers with math-verify, in a pool with a hard timeout.

Why a pool of our own: math-verify 0.9 bounds its work with `signal.alarm`, which only works
on a process's main thread and only between Python bytecodes. A pathological answer such as
`\\boxed{9^{9^{9^{9^{9}}}}}` can make sympy call Python's integer `pow` for a billion-bit
number: one C call that no signal interrupts, for minutes (seen here: an alarm set for 1 s
had not been delivered after 20 s). So each sample runs in a worker process
(on its main thread), the worker arms its own alarm for the ordinary slow cases (it stays
alive), and the parent enforces a wall-clock limit per sample: a worker that is still busy at
the limit is killed and replaced, and the sample is marked `timeout`. Grading never hangs.

Workers are forks of one warm server (grading_workers.py), so a killed one costs a fork.

Grading rules (the reference's, made explicit; `RULES` names their version, which is part of
eval's resume fingerprint because a change of rules changes labels):
- the gold is read right first (answer_forms: its own delimiters, double escapes, bare unit
  words, thousands separators), then parsed wrapped in `$…$` once, as the reference does,
  with math-verify's default extraction; a gold that yields nothing is `bad_gold`;
- in the prediction, `\\boxed{}` contents are read right (thousands separators, `\\$`), then
  it is parsed with `\\boxed{}` answers preferred (LaTeX extraction with
  `boxed_match_priority=0`, then plain expressions); nothing extracted is `no_answer`;
- `verify(gold, pred)` decides the label (gold first: math-verify's comparison is not symmetric);
- where it says no, a narrow second opinion (second_opinion.py) may say yes for a few named
  shapes; `Grade.flipped_by` names the rule, and `strict` turns this off.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any

from palign_cli.answer_forms import gold_unit, last_boxed, normalize_gold, normalize_prediction
from palign_cli.errors import PalignError
from palign_cli.grading_workers import ForkServer, Worker
from palign_cli.second_opinion import second_opinion

# The grading rules' version: bump it whenever a change here, in answer_forms or in
# second_opinion can change a label (eval refuses to resume an output graded under other rules).
RULES = "issue12-v1"

STATUSES = ("ok", "timeout", "no_answer", "bad_gold", "error")

# The worker's own alarm fires a little before the parent's hard limit, so a merely slow
# Python-level computation ends as `timeout` without costing a process restart.
SOFT_SHARE = 0.8
# Parsed golds kept per worker: the n samples of a problem share one gold, parsed once.
GOLD_CACHE_SIZE = 4096
# A worker must be up (math-verify imported) within this many seconds; a loaded machine is slow.
STARTUP_LIMIT = 120.0
# Tasks queued per worker: it starts the next as soon as it answers one (see Grader.grade).
PIPELINE = 2
# How much of a completion's end `possible_false_negative` looks at (see there).
ANSWER_TAIL_CHARS = 500


@dataclass
class Grade:
    """The verdict on one completion: `label` 1 if its answer verifies against the gold."""

    label: int
    pred: str | None
    status: str  # "ok" | "timeout" | "no_answer" | "bad_gold" | "error"
    flipped_by: str | None = None  # the second-opinion rule that turned math-verify's "no" into 1


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# --- one pair, in this process ------------------------------------------------------------------

_QUIET = False


def quiet_math_verify() -> None:
    """We disable math-verify's own alarms (ours replace them); silence its warning about that."""
    global _QUIET
    if not _QUIET:
        import logging

        logging.getLogger("math_verify").setLevel(logging.ERROR)
        _QUIET = True


def pred_config() -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def answer_text(parsed: Sequence[Any]) -> str | None:
    """The extracted answer as text: math-verify returns [sympy value, matched string]."""
    for item in parsed:
        if isinstance(item, str):
            return item
    return str(parsed[0]) if parsed else None


def grade_pair(
    gold: str,
    text: str,
    gold_cache: dict[str, Any] | None = None,
    extraction: list[Any] | None = None,
    *,
    question: str | None = None,
    strict: bool = False,
) -> Grade:
    """Grade one completion, in this process, with no timeout of its own (the caller's job).

    The gold and the boxed answers are first read right (answer_forms, always); where
    math-verify then says no, the second opinion may say yes (not under `strict`).
    """
    from math_verify import parse, verify

    quiet_math_verify()
    cache = gold_cache if gold_cache is not None else {}
    entry = cache.get(gold)
    if entry is None:
        norm, forms = normalize_gold(gold)
        entry = (norm, gold_unit(gold) if "unit_words" in forms else None, parse(f"${norm}$", parsing_timeout=None))  # type: ignore[arg-type]
        if len(cache) >= GOLD_CACHE_SIZE:
            cache.clear()
        cache[gold] = entry
    norm_gold, unit, parsed_gold = entry
    if not parsed_gold:
        return Grade(0, None, "bad_gold")
    text, _ = normalize_prediction(text, unit=unit)
    parsed = parse(text, extraction_config=extraction or pred_config(), parsing_timeout=None)  # type: ignore[arg-type]
    if not parsed:
        return Grade(0, None, "no_answer")
    pred = answer_text(parsed)
    if verify(parsed_gold, parsed, timeout_seconds=None):
        return Grade(1, pred, "ok")
    if not strict:
        rule = second_opinion(norm_gold, last_boxed(text) or pred or "", question)
        if rule:
            return Grade(1, pred, "ok", rule)
    return Grade(0, pred, "ok")


# --- the pool ----------------------------------------------------------------------------------------


class Grader:
    """A pool of warm math-verify workers with a hard wall-clock limit per sample.

    Use as a context manager (the fork server and workers start on entry, or on the first
    `grade`). `grade(pairs)` takes (gold, completion text) or (gold, text, question) tuples
    and returns one `Grade` each, in order. A sample still running at `timeout` seconds has its
    worker killed and replaced (a fork of the warm server) and comes back as `timeout`;
    `timeouts` and `restarts` count what happened over the grader's life. `strict` turns the
    second opinion off (math-verify's verdict on the forms read right, nothing more).
    """

    def __init__(self, workers: int | None = None, timeout: float = 5.0, *, strict: bool = False):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.workers = workers or default_workers()
        self.timeout = float(timeout)
        self.strict = strict
        self.timeouts = 0
        self.restarts = 0
        self._server: ForkServer | None = None
        self._pool: list[Worker] = []

    def __enter__(self) -> Grader:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self._server is None:
            self._server = ForkServer(STARTUP_LIMIT)
        while len(self._pool) < self.workers:
            self._pool.append(Worker(self._server, self.timeout * SOFT_SHARE))

    def _replace(self, worker: Worker) -> Worker:
        """Kill a worker and fork another in its place (it greets us when ready)."""
        worker.kill()
        self.restarts += 1
        assert self._server is not None
        fresh = Worker(self._server, self.timeout * SOFT_SHARE)
        self._pool[self._pool.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        """Ask every worker to exit, give them a moment together, then end what is left
        (a worker may be deep in a sample: Ctrl-C must not wait for it)."""
        for worker in self._pool:
            worker.ask_to_stop()
        until = time.monotonic() + 2.0
        for worker in self._pool:
            if not worker.stopped(max(0.0, until - time.monotonic())):
                worker.kill()
            else:
                worker.tx.close()
                worker.rx.close()
        self._pool = []
        if self._server is not None:
            self._server.close()
            self._server = None

    def grade(self, pairs: Sequence[tuple[str, str] | tuple[str, str, str | None]]) -> list[Grade]:
        """Grade every (gold, text[, question]) pair; a pair past the time limit comes back as `timeout`.

        Each worker holds up to `PIPELINE` tasks, so it starts the next one without waiting
        for the parent to wake up (a sample takes ~3 ms; a round trip on a busy machine is a
        good share of that). The limit runs for the task a worker is on: from its send, or
        from the answer to the one before. Longest texts go first, so the last tasks are
        short and no worker idles at the end while another finishes a long one.
        """
        self._start()
        tasks = [(p[0], p[1], p[2] if len(p) > 2 else None, self.strict) for p in pairs]
        results: list[Grade | None] = [None] * len(tasks)
        todo = deque(sorted(range(len(tasks)), key=lambda i: -len(tasks[i][1])))
        ready = [w for w in self._pool if w.ready]
        starting = {w.rx: w for w in self._pool if not w.ready}
        start_by = time.monotonic() + STARTUP_LIMIT

        retried: set[int] = set()

        def restart(worker: Worker, status: str) -> None:
            """The task a worker was on gets `status`; those queued behind it go back first.

            A worker that died ("error") may have died of something else (killed from
            outside, or already dead when the task was sent): its task is retried once on a
            fresh worker, and only a second death on it makes it `error`."""
            nonlocal start_by
            if worker.inflight:
                head = worker.inflight.popleft()
                if status == "error" and head not in retried:
                    retried.add(head)
                    worker.inflight.appendleft(head)
                else:
                    results[head] = Grade(0, None, status)
                todo.extendleft(reversed(worker.inflight))
            ready.remove(worker)
            fresh = self._replace(worker)
            starting[fresh.rx] = fresh
            start_by = time.monotonic() + STARTUP_LIMIT

        while todo or any(w.inflight for w in ready):
            for worker in list(ready):
                while todo and len(worker.inflight) < PIPELINE:
                    index = todo.popleft()
                    try:
                        worker.send(index, tasks[index], time.monotonic(), self.timeout)
                    except (OSError, ValueError):  # it died: replace it, retry its tasks
                        todo.appendleft(index)
                        restart(worker, "error")
                        break
            busy = {w.rx: w for w in ready if w.inflight}
            if not busy and not starting:
                break  # nothing left to wait for (only when todo is empty)
            soonest = min([w.deadline for w in busy.values()] + [start_by] * bool(starting))
            for conn in wait([*busy, *starting], timeout=max(0.0, soonest - time.monotonic())):
                if conn in starting:
                    worker = starting.pop(conn)  # type: ignore[arg-type]
                    worker.await_ready(0)
                    ready.append(worker)
                    continue
                worker = busy[conn]  # type: ignore[index]
                try:
                    while worker.rx.poll():  # every answer already there
                        index, label, pred, status, flipped_by = worker.rx.recv()
                        results[index] = Grade(label, pred, status, flipped_by)
                        self.timeouts += status == "timeout"
                        worker.done(index, time.monotonic(), self.timeout)
                except (EOFError, OSError):  # died mid-task (out of memory, a crash)
                    restart(worker, "error")
            now = time.monotonic()
            if starting and now >= start_by:
                raise PalignError(f"grading workers did not start within {STARTUP_LIMIT:.0f} s")
            for worker in list(ready):
                if worker.inflight and now >= worker.deadline:  # stuck (in C, where no signal reaches): kill it
                    self.timeouts += 1
                    restart(worker, "timeout")
        return results  # type: ignore[return-value]


_SPACE = re.compile(r"\s+")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\{([^{}]*)\}")


def _squash(text: str) -> str:
    return _SPACE.sub("", text)


def possible_false_negative(gold: str, text: str, grade: Grade) -> bool:
    """True when the gold answer appears, as written, near the end of a sample graded wrong.

    Such samples deserve a look: the answer may be there but not where the extractor looked
    (no `\\boxed{}`, a prose answer, units around it). Only the end of the text is searched,
    and the gold must stand alone (not inside a longer number or word), because a short gold
    like `2` appears somewhere in nearly every solution. Whitespace is ignored, and a gold
    such as `\\text{east}` is also looked for as `east`.
    """
    if grade.label == 1:
        return False
    tail = text[-ANSWER_TAIL_CHARS:]
    for needle in {_squash(gold).strip("$"), _squash(_TEXT_WRAPPER.sub(r"\1", gold)).strip("$")}:
        if not needle:
            continue
        spaced = r"\s*".join(re.escape(ch) for ch in needle)  # `x = 3` matches `x=3`
        if re.search(r"(?<![0-9A-Za-z.])" + spaced + r"(?![0-9A-Za-z]|\.[0-9])", tail):
            return True
    return False
