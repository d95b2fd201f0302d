"""`palign report`: one self-contained HTML page about a run directory.

The page embeds its plots as PNG data URIs, so it can be mailed or attached to an issue as a
single file. Each section reads the stage outputs that `palign run` writes and is left out,
with a note, when that stage has not run. Files are streamed; only the few numbers plotted
are kept.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CURVES_SHOWN = 6


def _records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with open(path, "rb") as f:
        for raw in f:
            if raw.strip():
                try:
                    yield json.loads(raw)
                except json.JSONDecodeError:
                    continue  # a torn last line of a run still in progress


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


def _curve_points(rec: dict[str, Any]) -> list[tuple[float, float]]:
    curve = rec.get("curve")
    total = rec.get("total_units") or (len(curve) if curve else 0)
    if not curve or not total:
        return []
    points = []
    for i, item in enumerate(curve, 1):
        if isinstance(item, dict):
            k, p = item.get("k", i), item.get("p_enough")
        else:
            k, p = i, item
        if p is not None:
            points.append((k / total, float(p)))
    return points


def truncate_section(run: Path) -> tuple[str, list[str]]:
    ratios, calls, curves = [], [], []
    for rec in _records(run / "truncate.jsonl"):
        if rec.get("prefix_ratio") is not None:
            ratios.append(float(rec["prefix_ratio"]))
        n = rec.get("judge_calls", len(rec.get("trace") or []))
        calls.append(int(n))
        if len(curves) < CURVES_SHOWN:
            pts = _curve_points(rec)
            if pts:
                curves.append((str(rec.get("id")), pts))
    if not ratios:
        return "Truncate", ["<p class=note>No truncate output in this run.</p>"]
    parts = []
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
    total = verified = 0
    for rec in _records(run / "align.jsonl"):
        total += 1
        verified += bool(rec.get("verified"))
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
        for rec in _records(log):
            if "loss" in rec and rec["loss"] is not None:
                steps.append(rec.get("current_steps", len(steps) + 1))
                losses.append(float(rec["loss"]))
    if not losses:
        return "Train", ["<p class=note>No LLaMA-Factory training log (trainer_log.jsonl) in this run.</p>"]
    fig, ax = _figure()
    ax.plot(steps, losses, marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss (LLaMA-Factory trainer_log.jsonl)")
    return "Train", [f'<img alt="training loss" src="{_png(fig)}">']


def _pass_rows(summary: Any) -> list[tuple[str, dict[str, float]]]:
    """(benchmark, {"pass@1": .., ...}) from eval's summary JSON, whatever its nesting."""
    if isinstance(summary, dict) and isinstance(summary.get("files"), (dict, list)):
        summary = summary["files"]
    items = summary.items() if isinstance(summary, dict) else [(d.get("name") or d.get("file"), d) for d in summary]
    rows = []
    for name, stats in items:
        if isinstance(stats, dict):
            ks = {k: float(v) for k, v in stats.items() if k.startswith("pass@") and isinstance(v, (int, float))}
            if ks:
                rows.append((Path(str(name)).stem, ks))
    return rows


def eval_section(run: Path) -> tuple[str, list[str]]:
    path = run / "summary.json"
    if not path.exists():
        return "Eval", ["<p class=note>No eval summary (summary.json) in this run.</p>"]
    rows = _pass_rows(json.loads(path.read_text()))
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
    run = Path(run_dir)
    sections = [f(run) for f in (truncate_section, align_section, train_section, eval_section)]
    body = "".join(f"<h2>{html.escape(title)}</h2>" + "".join(parts) for title, parts in sections)
    return (f"<!doctype html><html><head><meta charset=utf-8><title>palign report: {html.escape(run.name)}</title>"
            f"<style>{STYLE}</style></head><body><h1>palign report: {html.escape(str(run))}</h1>{body}</body></html>")
