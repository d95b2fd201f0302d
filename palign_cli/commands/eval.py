"""`palign eval`: grade sampled completions with math-verify and report pass@k per benchmark."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Annotated, Any

import typer

from palign_cli import options as o
from palign_cli.config import Grading, GradingPolicy
from palign_cli.options import Group, IOOptions, field_group, with_groups

NAME = "eval"

Inputs = Annotated[
    list[str],
    typer.Option("-i", "--input", help="Sampled completions (JSONL), or - for stdin. Repeat for several benchmarks.", rich_help_panel=o.IO_PANEL),
]
Summary = Annotated[
    str | None,
    typer.Option("--summary", metavar="FILE.json", help="Also write the per-file numbers as JSON.", rich_help_panel=o.IO_PANEL),
]
OutputsField = Annotated[
    str | None,
    typer.Option("--outputs-field", help="Field holding the list of completions [default: outputs|output].", rich_help_panel=o.IO_PANEL),
]
Ks = Annotated[
    str | None,
    typer.Option("--k", metavar="K[,K...]", help="pass@k to report, e.g. 1,3 [default: 1 and n]."),
]
IO_FLAGS = ("output", "overwrite", "shard", "skip_invalid", "rejects", "id_field", "batch_size")


@with_groups(
    io=Group(IOOptions(input="-", batch_size=512), only=IO_FLAGS), fields=field_group("answer"), grading=Group(Grading()),
    policy=Group(GradingPolicy()),
)
def command(
    input: Inputs,
    summary: Summary = None,
    k: Ks = None,
    outputs_field: OutputsField = None,
    **groups,
) -> None:
    """Grade every sample against the gold answer with math-verify; report pass@k per file.

    Reads `palign infer` output and the reference's files (`output`: list of strings). Each
    record gets `labels`, `preds`, `grade_status`, `flipped_by`, `pass_at` and `source_file`.
    pass@k is the unbiased estimator over each record's actual samples. Where math-verify says
    no, a narrow second opinion on its known blind spots may say yes; each such label is
    counted (`flipped` column, `flipped_by` per rule) and --strict turns it off. One table row
    per input file plus an average row on stderr; --summary writes the same numbers as JSON.
    --batch-size counts samples here (graded per pool call and flushed together).
    """
    from palign_cli.commands.runner import run_stage
    from palign_cli.metrics import parse_ks
    from palign_cli.stage import GraderNeed, StageRun
    from palign_cli.stages.eval import SOURCE_FIELD, EvalConfig, run_eval, source_name, summary_line

    io, grading, policy = groups["io"], groups["grading"], groups["policy"]
    _check_paths(input, io.output, summary)
    cfg = EvalConfig(
        inputs=tuple(input), ks=parse_ks(k), timeout=grading.grade_timeout,
        answer_field=groups["fields"].answer_field, outputs_field=outputs_field,
        strict=policy.strict, count_cut=policy.count_cut,
    )
    run_stage(StageRun(
        NAME, cfg, required=cfg.roles(), needs_engine=False, unit="problems",
        grader=GraderNeed(grading.grade_workers, grading.grade_timeout, strict=cfg.strict),
        source_field=SOURCE_FIELD, source_name=source_name,
        run=lambda ctx: run_eval(ctx.io, cfg, ctx.grader, batch_size=io.batch_size, reporter=ctx.reporter),
        report=lambda report: _show(report, cfg, summary), summary=summary_line,
    ), replace(io, input=list(input)), None)


def _show(report: Any, cfg: Any, summary: str | None) -> None:
    from palign_cli import console
    from palign_cli.eval_table import build_table, print_table
    from palign_cli.records import write_json

    print_table(build_table(report.rows, report.average, cfg.count_cut.value))
    for row in report.rows:
        for key, skipped in row["skipped_for_k"].items():
            if skipped:
                console.warn(f"{row['name']}: pass@{key} leaves out {skipped} of {row['n_problems']} problems (fewer than {key} samples)")
    if summary:
        write_json(summary, {"files": {r["file"]: r for r in report.rows}, "average": report.average, "config": cfg.fingerprint()})


def _check_paths(inputs: list[str], output: str, summary: str | None) -> None:
    """Inputs given once and present; --summary neither an input nor the output, by any path.
    (StageIO checks -i against -o.)"""
    from palign_cli.errors import UsageError
    from palign_cli.records import same_file

    files = [p for p in inputs if p != "-"]
    for path in files:
        if not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
    if inputs.count("-") > 1 or any(same_file(a, b) for i, a in enumerate(files) for b in files[i + 1:]):
        raise UsageError("the same -i file is given twice")
    if summary and any(p != "-" and (p == summary or (os.path.exists(summary) and same_file(summary, p))) for p in [*files, output]):
        raise UsageError(f"--summary {summary} would overwrite an input or the output")
