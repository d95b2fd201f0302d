"""`palign report`: one self-contained HTML page about a run directory.

The page embeds its plots as PNG data URIs, so it can be mailed or attached to an issue as a
single file. Each section reads the stage outputs that `palign run` writes and is left out,
with a note, when that stage has not run. Files are streamed; only the few numbers plotted
are kept.

Every value read back is checked before it is plotted: a number that is not one, a line that
is not JSON, a summary that is not an eval summary is one line naming file, line and field
(exit 2), never a traceback or a silently wrong plot. The one exception is the last line of
a file that has no newline yet: a stage still writing it, skipped as in progress.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from palign_cli.errors import InputError, UsageError
from palign_cli.records import read_output

CURVES_SHOWN = 6
RUN_FILES = ("truncate.jsonl", "align.jsonl", "train", "infer", "summary.json", "graded.jsonl")


def check_run_dir(run: Path) -> None:
    """A directory with none of a run's files is a mistyped path, not an empty run."""
    if not any((run / name).exists() for name in RUN_FILES):
        raise UsageError(f"{run}: holds no palign run (no truncate.jsonl, align.jsonl, train/, infer/ "
                         "or summary.json); nothing to report")


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of a file of the run, if it exists; stages may still be writing."""
    if path.exists():
        yield from read_output(path, what="run", fix="nothing is written until it is fixed", live=True)


def _number(rec: dict[str, Any], key: str, where: tuple[Path, int], lo: float | None = None,
            hi: float | None = None) -> float | None:
    value = rec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(str(where[0]), where[1], f"is not a number: {value!r}", field=key)
    if lo is not None and hi is not None and not lo <= value <= hi:  # (NaN is out of range too)
        raise InputError(str(where[0]), where[1], f"is not between {lo:g} and {hi:g}: {value!r}", field=key)
    return float(value)


def _count(rec: dict[str, Any], key: str, where: tuple[Path, int]) -> int | None:
    value = rec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InputError(str(where[0]), where[1], f"is not a whole number: {value!r}", field=key)
    return value


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 3.4))


def _curve_points(rec: dict[str, Any], total: int | None, where: tuple[Path, int]) -> list[tuple[float, float]]:
    """(prefix ratio, P(ENOUGH)) per boundary from `curve`: numbers, or {k, p_enough} items."""
    curve = rec.get("curve")
    if curve is None:
        return []
    if not isinstance(curve, list) or not all(_curve_item(x) for x in curve):
        raise InputError(str(where[0]), where[1], "is not a list of numbers or {k, p_enough} items", field="curve")
    total = total or len(curve)
    points = []
    for i, item in enumerate(curve, 1):
        k, p = (item.get("k", i), item.get("p_enough")) if isinstance(item, dict) else (i, item)
        if p is not None and total:
            points.append((k / total, float(p)))
    return points


def _curve_item(item: Any) -> bool:
    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if isinstance(item, dict):
        return (item.get("p_enough") is None or num(item["p_enough"])) and num(item.get("k", 0))
    return item is None or num(item)


def truncate_section(run: Path) -> tuple[str, list[str]]:
    path = run / "truncate.jsonl"
    ratios, calls, curves = [], [], []
    for lineno, rec in _records(path):
        where = (path, lineno)
        ratio = _number(rec, "prefix_ratio", where, 0, 1)
        if ratio is not None:
            ratios.append(ratio)
        n = _count(rec, "judge_calls", where)
        if n is None:
            trace = rec.get("trace")
            if trace is not None and not isinstance(trace, list):
                raise InputError(str(path), lineno, "is not a list", field="trace")
            n = len(trace or [])
        calls.append(n)
        pts = _curve_points(rec, _count(rec, "total_units", where), where)
        if pts and len(curves) < CURVES_SHOWN:
            curves.append((str(rec.get("id")), pts))
    if not ratios:
        return "Truncate", ["<p class=note>No truncate output in this run.</p>"]
    parts = [f"<p>{len(ratios)} problems, mean prefix ratio {sum(ratios) / len(ratios):.2f}, "
             f"{sum(calls)} judge calls</p>"]
    fig, ax = _figure()
    ax.hist(ratios, bins=20, range=(0, 1), color="#4a78b5")
    ax.set_xlabel("prefix ratio (units kept / units)")
    ax.set_ylabel("problems")
    ax.set_title(f"Prefix ratio, {len(ratios)} problems, mean {sum(ratios) / len(ratios):.2f}")
    parts.append(f'<img alt="prefix ratio histogram" src="{_png(fig)}">')
    fig, ax = _figure()
    ax.bar(range(len(calls)), calls, color="#6a9f58")
    ax.set_xlabel("problem (input order)")
    ax.set_ylabel("judge calls")
    ax.set_title(f"Judge calls per problem, total {sum(calls)}")
    parts.append(f'<img alt="judge calls per problem" src="{_png(fig)}">')
    if curves:
        fig, ax = _figure()
        for rid, pts in curves:
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=rid[-24:])
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("prefix ratio")
        ax.set_ylabel("P(ENOUGH)")
        ax.set_ylim(0, 1)
        ax.set_title("Sufficiency curves")
        ax.legend(fontsize=6)
        parts.append(f'<img alt="sufficiency curves" src="{_png(fig)}">')
    else:
        parts.append("<p class=note>No sufficiency curves: run truncate with --judge logprob --save-curve.</p>")
    return "Truncate", parts


def align_section(run: Path) -> tuple[str, list[str]]:
    path = run / "align.jsonl"
    total = verified = 0
    for lineno, rec in _records(path):
        value = rec.get("verified")
        if value is not None and not isinstance(value, bool):
            raise InputError(str(path), lineno, f"is not true, false or null: {value!r}", field="verified")
        total += 1
        verified += bool(value)
    if not total:
        return "Align", ["<p class=note>No align output in this run.</p>"]
    fig, ax = _figure()
    ax.bar(["verified", "not verified"], [verified, total - verified], color=["#6a9f58", "#c06060"])
    ax.set_ylabel("problems")
    ax.set_title(f"Verified after align: {verified}/{total} ({verified / total:.0%})")
    return "Align", [f'<img alt="verified share" src="{_png(fig)}">']


def train_section(run: Path) -> tuple[str, list[str]]:
    logs = sorted((run / "train").glob("**/trainer_log.jsonl")) if (run / "train").exists() else []
    steps, losses = [], []
    for log in logs[-1:]:
        for lineno, rec in _records(log):
            loss = _number(rec, "loss", (log, lineno))
            if loss is not None:
                step = _number(rec, "current_steps", (log, lineno))
                steps.append(step if step is not None else len(steps) + 1)
                losses.append(loss)
    if not losses:
        return "Train", ["<p class=note>No LLaMA-Factory training log (trainer_log.jsonl) in this run.</p>"]
    fig, ax = _figure()
    ax.plot(steps, losses, marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss (LLaMA-Factory trainer_log.jsonl)")
    return "Train", [f'<img alt="training loss" src="{_png(fig)}">']


def _pass_rows(path: Path) -> list[tuple[str, dict[str, float]]]:
    """(benchmark, {"pass@1": .., ...}) per file of eval's summary JSON, checked."""
    try:
        summary = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(str(path), None, f"is not valid JSON ({exc})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("files"), dict):
        raise InputError(str(path), None, "expected an object with 'files' (palign eval --summary)")
    rows = []
    for name, stats in summary["files"].items():
        if not isinstance(stats, dict):
            raise InputError(str(path), None, "is not an object", field=f"files.{name}")
        ks = {}
        for key, value in stats.items():
            if re.fullmatch(r"pass@\d+", key) and value is not None:  # None: fewer samples than k
                where = f"files.{name}.{key}"
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                    what = "is not between 0 and 1" if isinstance(value, (int, float)) and not isinstance(value, bool) else "is not a number"
                    raise InputError(str(path), None, f"{what}: {value!r}", field=where)
                ks[key] = float(value)
        if ks:
            rows.append((Path(str(name)).stem, ks))
    return rows


def eval_section(run: Path) -> tuple[str, list[str]]:
    path = run / "summary.json"
    if not path.exists():
        return "Eval", ["<p class=note>No eval summary (summary.json) in this run.</p>"]
    rows = _pass_rows(path)
    if not rows:
        return "Eval", ["<p class=note>summary.json has no pass@k numbers.</p>"]
    keys = sorted({k for _, ks in rows for k in ks}, key=lambda k: int(k.split("@")[1]))
    fig, ax = _figure()
    width = 0.8 / len(keys)
    for j, key in enumerate(keys):
        ax.bar([i + j * width for i in range(len(rows))], [ks.get(key, 0) for _, ks in rows], width, label=key)
    ax.set_xticks([i + width * (len(keys) - 1) / 2 for i in range(len(rows))], [n for n, _ in rows])
    ax.set_ylim(0, 1)
    ax.set_ylabel("pass@k")
    ax.legend()
    ax.set_title("pass@k per benchmark")
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{html.escape(n)}</td>" + "".join(f"<td>{ks.get(k, float('nan')):.3f}</td>" for k in keys) + "</tr>"
        for n, ks in rows
    )
    table = f"<table><tr><th>benchmark</th>{head}</tr>{body}</table>"
    return "Eval", [f'<img alt="pass at k" src="{_png(fig)}">', table]


STYLE = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}
h1{font-size:1.5em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
img{max-width:48%;margin:.5em 1% .5em 0;vertical-align:top} .note{color:#777}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}"""


def build_report(run_dir: str | Path) -> str:
    """The whole page, built before anything is written: a bad file leaves no half page."""
    run = Path(run_dir)
    check_run_dir(run)
    sections = [f(run) for f in (truncate_section, align_section, train_section, eval_section)]
    body = "".join(f"<h2>{html.escape(title)}</h2>" + "".join(parts) for title, parts in sections)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>palign report: {html.escape(run.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>palign report: {html.escape(str(run))}</h1>{body}</body></html>")
