"""Grading throughput: palign's Grader against the reference's plain serial math-verify loop.

    .venv/bin/python benchmarks/bench_grading.py [--workers N] [--rounds 3]

Samples: 3,229 distinct real texts from ../shared/data, no repeats (repeats would let
sympy's caches flatter whichever side sees them twice): the 800 Qwen2.5-Math MATH samples,
the 570 Sky-T1 long-CoT outputs, the 40 R1-distill long CoTs (thought + final response), and
the reference solutions of MATH-500 (500, `\boxed{}`) and GSM8K (1,319, `#### N`).

The reference loop is `verify(parse('$' + gold + '$'), parse(pred))`, one sample at a time in
one fresh process (math-verify's own 5 s alarms); its time excludes that process's start and
imports. palign's time includes starting its workers. Rounds alternate the two, so load
from other users of a shared machine hits both alike; the median ratio is the summary.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from grading_agreement import QWEN, SKYT1, samples  # noqa: E402

from palign_cli.grading import Grader, default_workers  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
TEACHER = "teacher_cots_sample.jsonl"


def _rows(name: str):
    with open(DATA / name, "rb") as f:
        for raw in f:
            yield orjson.loads(raw)


def load() -> list[tuple[str, str]]:
    pairs = [(s["gold"], s["text"]) for name in (QWEN, SKYT1) for s in samples(name)]
    pairs += [(r["answer"], r["long_cot"] + "\n</think>\n\n" + r["final_response"]) for r in _rows(TEACHER)]
    pairs += [(r["answer"], r["solution"]) for r in _rows("math500.jsonl")]
    pairs += [(r["answer"], r["solution"]) for r in _rows("gsm8k_test.jsonl")]
    return pairs


def reference_loop(pairs: list[tuple[str, str]]) -> list[int]:
    """The reference's grading, verbatim in spirit: serial, default extraction, 5 s alarms."""
    from math_verify import parse, verify

    return [int(verify(parse("$" + gold + "$"), parse(pred))) for gold, pred in pairs]


def reference_in_fresh_process() -> tuple[float, float, list[int]]:
    """Run `reference_loop` in a new interpreter (cold caches, like a real run): (s, CPU s, labels)."""
    out = subprocess.run([sys.executable, __file__, "--reference-only"], check=True, capture_output=True)
    result = orjson.loads(out.stdout.splitlines()[-1])
    return result["seconds"], result["cpu"], result["labels"]


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_palign(pairs: list[tuple[str, str]], workers: int) -> tuple[float, float, float, list[int], Grader]:
    """(start-up s, grading s, CPU s of parent and workers, labels, grader) for one fresh Grader."""
    cpu0 = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with Grader(workers=workers, timeout=5.0) as grader:
        grader.grade([("1", "1")] * workers)  # waits for every worker, to time start-up apart
        up = time.perf_counter() - started
        t0 = time.perf_counter()
        grades = grader.grade(pairs)
        graded = time.perf_counter() - t0
    cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu0  # workers are reaped by now
    return up, graded, cpu, [g.label for g in grades], grader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=1, help="alternate palign and reference this many times (shared machines drift)")
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    import logging

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    pairs = load()
    if args.reference_only:
        import math_verify  # noqa: F401  (imports are not the loop's time)

        t0, c0 = time.perf_counter(), time.process_time()
        labels = reference_loop(pairs)
        print(orjson.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "labels": labels}).decode())
        return
    workers = args.workers or default_workers()
    n = len(pairs)
    print(f"{n} samples; {os.cpu_count()} CPUs visible, {default_workers()} usable; palign workers {workers}")
    ratios = []
    for r in range(1, args.rounds + 1):
        up, graded, cpu, ours_labels, grader = run_palign(pairs, workers)
        ours = n / (up + graded)
        print(f"[{r}] palign Grader: {up + graded:.1f} s ({up:.1f} s start-up + {graded:.1f} s grading): "
              f"{ours:.0f} samples/s end to end, {n / graded:.0f} samples/s grading; "
              f"{cpu:.1f} CPU s; timeouts {grader.timeouts}, restarts {grader.restarts}")
        if args.skip_reference:
            continue
        ref_s, ref_cpu, ref_labels = reference_in_fresh_process()
        ratios.append(ours / (n / ref_s))
        print(f"[{r}] reference serial loop: {ref_s:.1f} s: {n / ref_s:.0f} samples/s; {ref_cpu:.1f} CPU s; "
              f"ratio palign/reference {ratios[-1]:.2f}x; "
              f"labels differing: {sum(a != b for a, b in zip(ref_labels, ours_labels))} of {n}")
    if ratios:
        print(f"median ratio over {len(ratios)} round(s): {statistics.median(ratios):.2f}x "
              f"(palign end to end, start-up included, vs the reference loop)")


if __name__ == "__main__":
    main()
