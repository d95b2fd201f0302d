"""Grade completions against gold answers with math-verify, in a pool with a hard timeout.

Why a pool of our own: math-verify 0.9 bounds its work with `signal.alarm`, which only works
on a process's main thread and only between Python bytecodes. A pathological answer such as
`\\boxed{9^{9^{9^{9^{9}}}}}` can make sympy call Python's integer `pow` for a billion-bit
number: one C call that no signal interrupts, for minutes (seen here: an alarm set for 1 s
had not been delivered after 20 s). So each sample runs in a worker process
(on its main thread), the worker arms its own alarm for the ordinary slow cases (it stays
alive), and the parent enforces a wall-clock limit per sample: a worker that is still busy at
the limit is killed and replaced, and the sample is marked `timeout`. Grading never hangs.

Grading rules (the reference's, made explicit):
- the gold is parsed first, wrapped in `$…$` as the reference does, with math-verify's default
  extraction; a gold that yields nothing is `bad_gold` (counted wrong, reported);
- the prediction is parsed with `\\boxed{}` answers preferred (LaTeX extraction with
  `boxed_match_priority=0`, then plain expressions); nothing extracted is `no_answer`;
- `verify(gold, pred)` decides the label (gold first: math-verify's comparison is not symmetric).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from palign_cli.errors import BackendUnavailable, PalignError

STATUSES = ("ok", "timeout", "no_answer", "bad_gold", "error")

# The worker's own alarm fires a little before the parent's hard limit, so a merely slow
# Python-level computation ends as `timeout` without costing a process restart.
SOFT_SHARE = 0.8
# Parsed golds kept per worker: the n samples of a problem share one gold, parsed once.
GOLD_CACHE_SIZE = 4096
# A worker must be up (math-verify imported) within this many seconds; a loaded machine is slow.
STARTUP_LIMIT = 120.0
# How much of a completion's end `possible_false_negative` looks at (see there).
ANSWER_TAIL_CHARS = 500


@dataclass
class Grade:
    """The verdict on one completion: `label` 1 if its answer verifies against the gold."""

    label: int
    pred: str | None
    status: str  # "ok" | "timeout" | "no_answer" | "bad_gold" | "error"


def default_workers() -> int:
    """One worker per CPU this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# --- worker side ------------------------------------------------------------------------------


class _SoftTimeout(BaseException):
    """Raised by the worker's alarm. A BaseException, so math-verify's `except Exception`
    handlers (which turn errors into a silent False) let it through to us."""


_ARMED = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _ARMED:
        raise _SoftTimeout()


_QUIET = False


def _quiet_math_verify() -> None:
    """We disable math-verify's own alarms (ours replace them); silence its warning about that."""
    global _QUIET
    if not _QUIET:
        import logging

        logging.getLogger("math_verify").setLevel(logging.ERROR)
        _QUIET = True


def _pred_config() -> list[Any]:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def answer_text(parsed: Sequence[Any]) -> str | None:
    """The extracted answer as text: math-verify returns [sympy value, matched string]."""
    for item in parsed:
        if isinstance(item, str):
            return item
    return str(parsed[0]) if parsed else None


def grade_pair(gold: str, text: str, gold_cache: dict[str, list[Any]] | None = None, pred_config: list[Any] | None = None) -> Grade:
    """Grade one completion, in this process, with no timeout of its own (the caller's job)."""
    from math_verify import parse, verify

    _quiet_math_verify()
    cache = gold_cache if gold_cache is not None else {}
    parsed_gold = cache.get(gold)
    if parsed_gold is None:
        parsed_gold = parse(f"${gold}$", parsing_timeout=None)  # type: ignore[arg-type]
        if len(cache) >= GOLD_CACHE_SIZE:
            cache.clear()
        cache[gold] = parsed_gold
    if not parsed_gold:
        return Grade(0, None, "bad_gold")
    parsed = parse(text, extraction_config=pred_config or _pred_config(), parsing_timeout=None)  # type: ignore[arg-type]
    if not parsed:
        return Grade(0, None, "no_answer")
    ok = verify(parsed_gold, parsed, timeout_seconds=None)
    return Grade(int(bool(ok)), answer_text(parsed), "ok")


def _serve(rx_fd: int, tx_fd: int, soft_timeout: float) -> None:
    """Worker entry point: serve (index, gold, text) tasks one at a time until EOF or None."""
    global _ARMED
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGALRM, _on_alarm)
    _quiet_math_verify()
    rx, tx = Connection(rx_fd, writable=False), Connection(tx_fd, readable=False)
    cache: dict[str, list[Any]] = {}
    config = _pred_config()
    tx.send("ready")
    while True:
        try:
            task = rx.recv()
        except (EOFError, OSError):
            task = None
        if task is None:
            os._exit(0)  # nothing to flush; skips a slow teardown of sympy's modules
        index, gold, text = task
        try:
            try:
                _ARMED = True
                signal.setitimer(signal.ITIMER_REAL, soft_timeout)
                grade = grade_pair(gold, text, cache, config)
            finally:
                _ARMED = False
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:
            grade = Grade(0, None, "timeout")
        except Exception:  # noqa: BLE001 - a bug in a dependency must not end the run
            grade = Grade(0, None, "error")
        tx.send((index, grade.label, grade.pred, grade.status))


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the parent dies, even mid-computation
    (a pathological sample would otherwise keep a core busy for minutes after a crash).
    The kernel ties this to the thread that started the worker: create a Grader on a thread
    that outlives it (the main thread, in palign)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# --- parent side ------------------------------------------------------------------------------

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class _Worker:
    """One worker process and its two pipes.

    A fresh interpreter (not a fork): the parent may hold threads or a GPU engine (align grades
    next to a loaded model), and multiprocessing's spawn/forkserver would re-import the
    caller's `__main__`. Its stdout goes nowhere, since the parent's stdout may carry JSONL.
    """

    def __init__(self, soft_timeout: float):
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        code = f"from palign_cli.grading import _serve; _serve({to_child_r}, {from_child_w}, {soft_timeout!r})"
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-c", code],
                pass_fds=(to_child_r, from_child_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.tx = Connection(to_child_w, readable=False)
        self.rx = Connection(from_child_r, writable=False)
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0

    def await_ready(self, timeout: float) -> None:
        """Wait for the worker's greeting (it has imported math-verify)."""
        if self.ready:
            return
        if not self.rx.poll(timeout):
            raise PalignError(f"a grading worker did not start within {timeout:.0f} s")
        try:
            greeting = self.rx.recv()
        except (EOFError, OSError):
            raise BackendUnavailable(
                f"a grading worker exited at start (see its error above); grading needs math-verify: pip install 'math-verify>=0.7' into {sys.executable}"
            ) from None
        if greeting != "ready":
            raise PalignError(f"a grading worker said {greeting!r} instead of 'ready'")
        self.ready = True

    def send(self, index: int, gold: str, text: str, deadline: float) -> None:
        self.task, self.deadline = index, deadline
        self.tx.send((index, gold, text))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.tx.close()
        self.rx.close()

    def ask_to_stop(self) -> None:
        try:
            self.tx.send(None)
        except (OSError, ValueError):
            pass


class Grader:
    """A pool of math-verify worker processes with a hard wall-clock limit per sample.

    Use as a context manager (workers start on entry, or on the first `grade`).
    `grade(pairs)` takes (gold, completion text) pairs and returns one `Grade` each, in order.
    A sample still running at `timeout` seconds has its worker killed and replaced and comes
    back as `timeout`; `timeouts` and `restarts` count what happened over the grader's life.
    """

    def __init__(self, workers: int | None = None, timeout: float = 5.0):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.workers = workers or default_workers()
        self.timeout = float(timeout)
        self.timeouts = 0
        self.restarts = 0
        self._pool: list[_Worker] = []

    def __enter__(self) -> Grader:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        while len(self._pool) < self.workers:
            self._pool.append(_Worker(self.timeout * SOFT_SHARE))

    def _replace(self, worker: _Worker) -> _Worker:
        """Kill a worker and start another in its place (it greets us when ready)."""
        worker.kill()
        self.restarts += 1
        fresh = _Worker(self.timeout * SOFT_SHARE)
        self._pool[self._pool.index(worker)] = fresh
        return fresh

    def close(self) -> None:
        """Ask every worker to exit, give them a moment together, then kill what is left
        (a worker may be deep in a sample: Ctrl-C must not wait for it)."""
        for worker in self._pool:
            worker.ask_to_stop()
        until = time.monotonic() + 2.0
        for worker in self._pool:
            try:
                worker.process.wait(timeout=max(0.0, until - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            worker.kill()
        self._pool = []

    def grade(self, pairs: Sequence[tuple[str, str]]) -> list[Grade]:
        """Grade every (gold, text) pair; a pair past the time limit comes back as `timeout`."""
        self._start()
        results: list[Grade | None] = [None] * len(pairs)
        todo = deque(range(len(pairs)))
        idle = [w for w in self._pool if w.ready]
        starting = {w.rx: w for w in self._pool if not w.ready}
        start_by = time.monotonic() + STARTUP_LIMIT
        busy: dict[Connection, _Worker] = {}
        while todo or busy:
            while todo and idle:
                worker = idle.pop()
                index = todo.popleft()
                try:
                    worker.send(index, *pairs[index], time.monotonic() + self.timeout)
                except (OSError, ValueError):  # it died while idle: replace it, retry the task
                    todo.appendleft(index)
                    fresh = self._replace(worker)
                    starting[fresh.rx] = fresh
                    continue
                busy[worker.rx] = worker
            if not busy and not starting:
                break  # nothing left to wait for (only when todo is empty)
            soonest = min([w.deadline for w in busy.values()] + [start_by] * bool(starting))
            for conn in wait([*busy, *starting], timeout=max(0.0, soonest - time.monotonic())):
                if conn in starting:
                    worker = starting.pop(conn)  # type: ignore[arg-type]
                    worker.await_ready(0)
                    idle.append(worker)
                    continue
                worker = busy.pop(conn)  # type: ignore[arg-type]
                try:
                    index, label, pred, status = worker.rx.recv()
                except (EOFError, OSError):  # died mid-task (out of memory, a crash)
                    results[worker.task] = Grade(0, None, "error")  # type: ignore[index]
                    fresh = self._replace(worker)
                    starting[fresh.rx] = fresh
                    start_by = time.monotonic() + STARTUP_LIMIT
                    continue
                results[index] = Grade(label, pred, status)
                self.timeouts += status == "timeout"
                idle.append(worker)
            now = time.monotonic()
            if starting and now >= start_by:
                raise PalignError(f"grading workers did not start within {STARTUP_LIMIT:.0f} s")
            for conn, worker in list(busy.items()):
                if now >= worker.deadline:  # stuck (in C, where no signal reaches): kill it
                    del busy[conn]
                    results[worker.task] = Grade(0, None, "timeout")  # type: ignore[index]
                    self.timeouts += 1
                    fresh = self._replace(worker)
                    starting[fresh.rx] = fresh
                    start_by = time.monotonic() + STARTUP_LIMIT
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
