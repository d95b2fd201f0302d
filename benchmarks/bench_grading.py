"""Grading throughput: palign's Grader against a plain serial loop, in one run, same labels.

    .venv/bin/python benchmarks/bench_grading.py [--workers N] [--rounds 3] [--strict]

Samples: 3,229 distinct real texts from ../shared/data, no repeats (repeats would let
sympy's caches flatter whichever side sees them twice): the 800 Qwen2.5-Math MATH samples,
the 570 Sky-T1 long-CoT outputs, the 40 R1-distill long CoTs (thought + final response), and
the reference solutions of MATH-500 (500, `\\boxed{}`) and GSM8K (1,319, `#### N`).

The serial loop grades every pair with palign's own rules (`grade_pair`: the same answer
forms, the same second opinion) one after another in one fresh process, with no timeout at
all; its loop time excludes that process's imports (timed apart). So the grading ratio
measures the pool alone: warm forked workers, pipes, the hard per-sample timeout. The end to
end ratio adds each side's start-up: the serial process's imports, palign's fork server
(its imports and warm-up) and forks. The
labels of both sides must be identical (checked; the run fails otherwise). Rounds alternate
the two, so load from other users of a shared machine hits both alike; the median ratio is
the summary. With several workers, each round also measures the ceiling: the serial loop
split in as many shards, run at once in separate processes. On 2 free cores that is about
2x; on a machine shared with other work it is what is left, and palign's share of it says how
much the pool itself costs. `--reference` also times the reference's plain `verify(parse('$'+gold+'$'),
parse(pred))` loop, for information (its labels differ by design: see grading.py).
"""

from __future__ import annotations

import argparse
import logging
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


def load() -> list[tuple[str, str, str | None]]:
    """(gold, text, question) for every sample."""
    pairs = [(s["gold"], s["text"], s["question"]) for name in (QWEN, SKYT1) for s in samples(name)]
    pairs += [(r["answer"], r["long_cot"] + "\n</think>\n\n" + r["final_response"], r["question"]) for r in _rows(TEACHER)]
    pairs += [(r["answer"], r["solution"], r["question"]) for r in _rows("math500.jsonl")]
    pairs += [(r["answer"], r["solution"], r["question"]) for r in _rows("gsm8k_test.jsonl")]
    return pairs


def serial_loop(pairs: list[tuple[str, str, str | None]], strict: bool) -> list[int]:
    """palign's rules, one pair after another, in this process (one gold cache, as a worker has)."""
    from palign_cli.grading import grade_pair, pred_config

    cache: dict = {}
    config = pred_config()
    return [grade_pair(g, t, cache, config, question=q, strict=strict).label for g, t, q in pairs]


def reference_loop(pairs: list[tuple[str, str, str | None]], strict: bool) -> list[int]:
    """The reference's grading: serial, default extraction, math-verify's own 5 s alarms."""
    from math_verify import parse, verify

    return [int(verify(parse("$" + gold + "$"), parse(pred))) for gold, pred, _ in pairs]


def in_fresh_process(loop: str, strict: bool) -> tuple[float, float, float, list[int]]:
    """Run a loop in a new interpreter (cold caches, like a real run): (s, CPU s, import s, labels)."""
    cmd = [sys.executable, __file__, "--only", loop] + ["--strict"] * strict
    out = subprocess.run(cmd, check=True, capture_output=True)
    result = orjson.loads(out.stdout.splitlines()[-1])
    return result["seconds"], result["cpu"], result["startup"], result["labels"]


def ceiling(workers: int, strict: bool) -> float:
    """What this machine gives `workers` processes right now: the serial loop split in
    `workers` shards run at once, in fresh processes; the slowest shard's loop time (s)."""
    cmd = [sys.executable, __file__, "--only", "serial"] + ["--strict"] * strict
    procs = [subprocess.Popen([*cmd, "--shard", f"{i}/{workers}"], stdout=subprocess.PIPE) for i in range(workers)]
    times = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit("a ceiling shard failed")
        times.append(orjson.loads(out.splitlines()[-1])["seconds"])
    return max(times)


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_palign(pairs, workers: int, strict: bool) -> tuple[float, float, float, list[int], Grader]:
    """(start-up s, grading s, CPU s of parent and workers, labels, grader) for one fresh Grader."""
    cpu0 = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    with Grader(workers=workers, timeout=5.0, strict=strict) as grader:
        grader.grade([("1", "1")] * workers)  # waits for every worker, to time start-up apart
        up = time.perf_counter() - started
        t0 = time.perf_counter()
        grades = grader.grade(pairs)
        graded = time.perf_counter() - t0
    cpu = _cpu(resource.RUSAGE_SELF) + _cpu(resource.RUSAGE_CHILDREN) - cpu0  # the server is reaped by now
    return up, graded, cpu, [g.label for g in grades], grader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--rounds", type=int, default=1, help="alternate palign and the serial loop this many times (shared machines drift)")
    parser.add_argument("--strict", action="store_true", help="grade without the second opinion, both sides")
    parser.add_argument("--reference", action="store_true", help="also time the reference's plain math-verify loop")
    parser.add_argument("--only", choices=("serial", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--shard", default="0/1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    pairs = load()
    if args.only:
        t_import = time.perf_counter()
        import math_verify  # noqa: F401  (imports are timed apart from the loop)

        from palign_cli.grading import grade_pair

        grade_pair("1", r"\boxed{1}")  # the lazy parts of sympy and the grammar, as palign's server warms up
        t_import = time.perf_counter() - t_import
        i, n = (int(x) for x in args.shard.split("/"))
        pairs = pairs[i::n]
        loop = serial_loop if args.only == "serial" else reference_loop
        t0, c0 = time.perf_counter(), time.process_time()
        labels = loop(pairs, args.strict)
        print(orjson.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0, "startup": t_import, "labels": labels}).decode())
        return
    workers = args.workers or default_workers()
    n = len(pairs)
    print(f"{n} samples; {os.cpu_count()} CPUs visible, {default_workers()} usable; palign workers {workers}; "
          f"load average {os.getloadavg()[0]:.2f}{'; strict' if args.strict else ''}")
    grading_ratios, e2e_ratios, ceilings = [], [], []
    for r in range(1, args.rounds + 1):
        up, graded, cpu, ours, grader = run_palign(pairs, workers, args.strict)
        print(f"[{r}] palign Grader: {up + graded:.1f} s ({up:.1f} s start-up + {graded:.1f} s grading); "
              f"{cpu:.1f} CPU s; timeouts {grader.timeouts}, restarts {grader.restarts}")
        serial_s, serial_cpu, serial_up, serial = in_fresh_process("serial", args.strict)
        differ = [i for i, (a, b) in enumerate(zip(serial, ours)) if a != b]
        grading_ratios.append(serial_s / graded)
        e2e_ratios.append((serial_up + serial_s) / (up + graded))
        print(f"[{r}] serial loop (palign's rules, one process): {serial_s:.1f} s (+ {serial_up:.1f} s imports); {serial_cpu:.1f} CPU s; "
              f"speed-up {grading_ratios[-1]:.2f}x grading, {e2e_ratios[-1]:.2f}x end to end; labels differing {len(differ)} of {n}")
        if differ:  # a timeout on a loaded machine is the only legitimate cause; say which
            raise SystemExit(f"labels differ at {differ[:10]}: the pool must grade exactly as the serial loop")
        if workers > 1:
            shards_s = ceiling(workers, args.strict)
            ceilings.append(serial_s / shards_s)
            print(f"[{r}] ceiling: the serial loop in {workers} shards at once: {shards_s:.1f} s, {ceilings[-1]:.2f}x "
                  f"(what this machine gives {workers} processes now); palign reaches {grading_ratios[-1] / ceilings[-1]:.0%} of it")
        if args.reference:
            ref_s, ref_cpu, _, ref = in_fresh_process("reference", args.strict)
            print(f"[{r}] reference plain math-verify loop: {ref_s:.1f} s; {ref_cpu:.1f} CPU s; "
                  f"palign end to end {ref_s / (up + graded):.2f}x its speed; labels differing {sum(a != b for a, b in zip(ref, ours))} of {n} (by design)")
    print(f"median over {len(grading_ratios)} round(s): palign Grader is {statistics.median(grading_ratios):.2f}x the serial loop "
          f"grading, {statistics.median(e2e_ratios):.2f}x end to end (each side's start-up included), {workers} workers"
          + (f"; the machine's ceiling for {workers} processes {statistics.median(ceilings):.2f}x" if ceilings else ""))


if __name__ == "__main__":
    main()
