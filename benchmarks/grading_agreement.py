"""How often palign's grader agrees with the labels that real graded files carry.

    .venv/bin/python benchmarks/grading_agreement.py [--strict] [--show 5] [--dump disagreements.jsonl]

Files (from ../shared/data, see SOURCES.md there):
- qwen25math_math100_graded_samples.jsonl: 100 MATH problems x 8 short-CoT samples, labelled
  by the Qwen2.5-Math evaluation harness (`is_correct`, against its normalized gold `gt`).
- skyt1_graded_long_cot_outputs.jsonl: 570 long-CoT outputs (Sky-T1 students), labelled by the
  same harness. The raw output is not stored; it is rebuilt from the thought and the solution
  with their markers, as SOURCES.md describes.

palign grades against the dataset gold (`answer`), with the problem text, as `palign eval`
would. Besides agreement it reports, per file, how many labels the second opinion flipped
(per rule: `flipped_by`; none under --strict) and how many samples each answer form touched
(answer_forms: those apply under --strict too), so every change against the recorded labels
can be traced to a named rule and reviewed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from palign_cli.answer_forms import gold_unit, normalize_gold, normalize_prediction  # noqa: E402
from palign_cli.grading import Grader  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
QWEN = "qwen25math_math100_graded_samples.jsonl"
SKYT1 = "skyt1_graded_long_cot_outputs.jsonl"


def skyt1_text(row: dict) -> str:
    """The full raw output, rebuilt: thought and solution joined with their markers."""
    parts = []
    if row.get("has_begin_of_thought"):
        parts.append("<|begin_of_thought|>\n\n")
    parts.append(row["long_cot"])
    if row.get("has_end_of_thought"):
        parts.append("\n\n<|end_of_thought|>")
    if row.get("final_solution") is not None:
        parts.append("\n\n<|begin_of_solution|>\n\n" + row["final_solution"] + "\n\n<|end_of_solution|>")
    return "".join(parts)


def samples(name: str) -> Iterator[dict]:
    """(id, sample index, gold, text, source label, source pred, harness gold) per sample."""
    with open(DATA / name, "rb") as f:
        for raw in f:
            row = orjson.loads(raw)
            if name == QWEN:
                for i, (text, ok, pred) in enumerate(zip(row["responses"], row["is_correct"], row["pred_answers"])):
                    yield {"id": row["id"], "i": i, "gold": row["answer"], "text": text, "label": int(ok), "src_pred": pred, "gt": row.get("gt"), "question": row.get("question")}
            else:
                yield {"id": row["id"], "i": 0, "gold": row["answer"], "text": skyt1_text(row), "label": int(row["is_correct"]), "src_pred": row.get("pred_answer"), "gt": row.get("gt"), "question": row.get("question")}


def agreement(name: str, grader: Grader) -> tuple[dict, list[dict]]:
    rows = list(samples(name))
    started = time.perf_counter()
    grades = grader.grade([(r["gold"], r["text"], r["question"]) for r in rows])
    seconds = time.perf_counter() - started
    confusion: Counter[tuple[int, int]] = Counter()
    disagreements = []
    for r, g in zip(rows, grades):
        confusion[(r["label"], g.label)] += 1
        if r["label"] != g.label:
            disagreements.append({**{k: r[k] for k in ("id", "i", "gold", "gt", "src_pred", "label")}, "ours": g.label, "pred": g.pred, "status": g.status, "flipped_by": g.flipped_by, "tail": r["text"][-300:]})
    n = len(rows)
    stats = {
        "file": name,
        "samples": n,
        "agree": n - len(disagreements),
        "agreement": (n - len(disagreements)) / n,
        "source_acc": sum(r["label"] for r in rows) / n,
        "palign_acc": sum(g.label for g in grades) / n,
        "source_only_correct": confusion[(1, 0)],
        "palign_only_correct": confusion[(0, 1)],
        "statuses": dict(Counter(g.status for g in grades)),
        "flipped_by": dict(Counter(g.flipped_by for g in grades if g.flipped_by)),
        "flips_against_source": dict(Counter(g.flipped_by for r, g in zip(rows, grades) if g.flipped_by and r["label"] != g.label)),
        "forms": forms_touched(rows),
        "seconds": round(seconds, 2),
    }
    return stats, disagreements


def forms_touched(rows: list[dict]) -> dict[str, int]:
    """Samples whose gold or boxed answer each answer form rewrote (they apply always)."""
    counts: Counter[str] = Counter()
    for r in rows:
        _, gold_forms = normalize_gold(r["gold"])
        _, pred_forms = normalize_prediction(r["text"], unit=gold_unit(r["gold"]))
        counts.update(set(gold_forms) | set(pred_forms))
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--strict", action="store_true", help="no second opinion (as palign eval --strict)")
    parser.add_argument("--show", type=int, default=0, help="print this many disagreements per file")
    parser.add_argument("--dump", help="write every disagreement to this JSONL file")
    args = parser.parse_args()
    dump = open(args.dump, "wb") if args.dump else None
    with Grader(workers=args.workers, timeout=args.timeout, strict=args.strict) as grader:
        for name in (QWEN, SKYT1):
            stats, disagreements = agreement(name, grader)
            print(
                f"{name}: agreement {stats['agreement']:.2%} ({stats['agree']}/{stats['samples']}); "
                f"source acc {stats['source_acc']:.2%}, palign acc {stats['palign_acc']:.2%}; "
                f"only source correct {stats['source_only_correct']}, only palign correct {stats['palign_only_correct']}; "
                f"statuses {stats['statuses']}; {stats['seconds']} s"
            )
            explained = stats["agree"] + sum(stats["flips_against_source"].values())
            print(f"  flipped_by {stats['flipped_by'] or '{}'} (against the source's label: {stats['flips_against_source'] or '{}'}); "
                  f"agreement counting those flips as reviewed {explained / stats['samples']:.2%}; "
                  f"answer forms touched {stats['forms'] or '{}'}")
            for d in disagreements[: args.show]:
                print(f"  {d['id']}#{d['i']}: gold {d['gold']!r} (harness gt {d['gt']!r}), harness pred {d['src_pred']!r} -> {d['label']}, palign pred {d['pred']!r} -> {d['ours']} [{d['status']}{', flipped by ' + d['flipped_by'] if d['flipped_by'] else ''}]")
            if dump:
                for d in disagreements:
                    dump.write(orjson.dumps({"file": name, **d}) + b"\n")
    if dump:
        dump.close()


if __name__ == "__main__":
    main()
