"""`palign eval`: grade sampled completions with math-verify and report pass@k per benchmark."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from palign_cli import options as o

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
Timeout = Annotated[
    float,
    typer.Option("--timeout", min=0.01, help="Hard limit in seconds per sample; past it the sample is `timeout` (wrong, counted)."),
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="Grading processes [default: one per CPU]."),
]


def command(
    input: Inputs,
    output: o.Output = "-",
    summary: Summary = None,
    k: Ks = None,
    timeout: Timeout = 5.0,
    workers: Workers = None,
    answer_field: o.AnswerField = None,
    outputs_field: OutputsField = None,
    id_field: o.IdField = "id",
    overwrite: o.Overwrite = False,
    shard: o.ShardOpt = None,
    skip_invalid: o.SkipInvalid = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples graded per pool call (and per output flush).", rich_help_panel=o.IO_PANEL)] = 512,
) -> None:
    """Grade every sample against the gold answer with math-verify; report pass@k per file.

    Reads `palign infer` output and the reference's files (`output`: list of strings). Each
    record gets `labels`, `preds`, `grade_status`, `pass_at` and `source_file`. pass@k is the
    unbiased estimator over each record's actual samples. One table row per input file plus
    an average row on stderr; --summary writes the same numbers as JSON.
    """
    from palign_cli import console
    from palign_cli.eval_table import build_table, print_table
    from palign_cli.grading import Grader
    from palign_cli.metrics import parse_ks
    from palign_cli.records import Shard
    from palign_cli.stages.eval import EvalConfig, run_eval

    _check_paths(input, output, summary)
    cfg = EvalConfig(inputs=tuple(input), ks=parse_ks(k), timeout=timeout, answer_field=answer_field, outputs_field=outputs_field)
    reporter = console.Reporter("eval", "problems")
    with Grader(workers=workers, timeout=timeout) as grader:
        report = run_eval(
            cfg, output, grader, id_field=id_field, overwrite=overwrite, shard=Shard.parse(shard),
            skip_invalid=skip_invalid, batch_size=batch_size, reporter=reporter,
        )
    print_table(build_table(report.rows, report.average))
    for row in report.rows:
        for key, skipped in row["skipped_for_k"].items():
            if skipped:
                console.warn(f"{row['name']}: pass@{key} leaves out {skipped} of {row['n_problems']} problems (fewer than {key} samples)")
    if summary:
        _write_json(summary, {"files": {r["file"]: r for r in report.rows}, "average": report.average, "config": cfg.fingerprint()})
    console.info(
        f"eval: {report.graded} problems ({report.samples} samples) graded in {report.seconds:.1f} s; "
        f"{report.skipped} already done, {report.rejected} rejected; "
        f"{report.average['timeouts']} timeouts, {report.average['ungradable_golds']} ungradable golds"
    )


def _check_paths(inputs: list[str], output: str, summary: str | None) -> None:
    from palign_cli.errors import UsageError

    seen = [os.path.normpath(p) if p != "-" else p for p in inputs]
    if len(set(seen)) != len(seen):
        raise UsageError("the same -i file is given twice")
    for path in inputs:
        if path != "-" and not os.path.isfile(path):
            raise UsageError(f"{path}: no such file")
        if path != "-" and output != "-" and os.path.realpath(path) == os.path.realpath(output):
            raise UsageError(f"-i and -o are the same file ({path}); write to another file")
    if summary and (summary == output or os.path.normpath(summary) in seen):
        raise UsageError(f"--summary {summary} would overwrite an input or the output")


def _write_json(path: str, data: Any) -> None:
    import orjson

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(tmp, target)
