"""Grade sampled completions against gold answers and summarize each input file (step 5).

Reads `palign infer` output (`outputs`, `finish_reasons`, `output_tokens`) and the
reference's files (`output` as a list of strings); adds per record `labels`, `preds`,
`grade_status`, `flipped_by` (per sample: the second-opinion rule that made it right, or
null), `pass_at` and `source_file` (the input it came from). The problem text, where the
record has one, goes to the grader: a precision it states is the only numeric tolerance.

Samples cut by --max-tokens (finish_reason "length") are graded as they stand unless
`count_cut` is "wrong"; samples whose prompt did not fit the context ("prompt_too_long") were
never generated: they are wrong and counted apart from the cut ones.

Several inputs share one output, so resume is keyed by (source file, id): two files of the
same benchmark from two models carry the same ids and must not skip each other. The list of
inputs is part of the resume fingerprint, which keeps that simple: a rerun with the same
inputs resumes, a different list is refused. The summary is computed by re-reading the whole
graded output (streaming), so records graded by an earlier, interrupted run count too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from palign_cli.config import CountCut, Fingerprinted
from palign_cli.errors import InputError
from palign_cli.grading import RULES, Grade, Grader, possible_false_negative
from palign_cli.metrics import FileSummary, RecordStats, average, record_pass_at
from palign_cli.records import (
    STDIO,
    Record,
    StageIO,
    batched,
    check_role,
    count_lines,
    display_name,
    field_names,
    is_regular_output,
    read_output,
)
from palign_cli.reporting import NullReporter, ProgressSink
from palign_cli.second_opinion import RULES as SECOND_OPINION_RULES

SOURCE_FIELD = "source_file"
OUTPUT_NAMES = ("outputs", "output")
FINISH_FIELD = "finish_reasons"
TOKENS_FIELD = "output_tokens"
STATUS_VALUES = frozenset({"ok", "timeout", "no_answer", "bad_gold", "error"})
CUT = "length"  # finish_reason of a sample cut by --max-tokens
TOO_LONG = "prompt_too_long"  # finish_reason of a prompt that did not fit (backends.base)


def source_name(path: str) -> str:
    """How an input is named in records, the summary and the fingerprint (`./a` == `a`)."""
    return STDIO if path == STDIO else os.path.normpath(path)


@dataclass(frozen=True)
class EvalConfig(Fingerprinted):
    """Everything that changes the grades: it is the resume fingerprint (workers are not)."""

    inputs: tuple[str, ...]
    ks: tuple[int, ...] | None = None  # None: 1 and each record's n
    timeout: float = 5.0
    answer_field: str | None = None
    outputs_field: str | None = None
    strict: bool = False  # no second opinion
    count_cut: CountCut = CountCut.credit

    def answer_names(self) -> tuple[str, ...]:
        return field_names("answer", self.answer_field)

    def output_names(self) -> tuple[str, ...]:
        return (self.outputs_field,) if self.outputs_field else OUTPUT_NAMES

    def roles(self) -> dict[str, tuple[str, ...]]:
        return {"answer": self.answer_names(), "outputs": self.output_names()}

    def fingerprint(self) -> dict[str, Any]:
        return {
            "inputs": [source_name(p) for p in self.inputs],
            "k": list(self.ks) if self.ks else "1,n",
            "timeout": self.timeout,
            "answer_field": self.answer_field,
            "outputs_field": self.outputs_field,
            "grader": f"math-verify {version('math-verify')}; rules {RULES}; gold $..$ first; pred boxed first",
            "strict": self.strict,
            "count_cut": CountCut(self.count_cut).value,
        }


@dataclass
class EvalReport:
    rows: list[dict[str, Any]] = field(default_factory=list)  # one summary per input file, in input order
    average: dict[str, Any] = field(default_factory=dict)
    graded: int = 0  # records graded in this run
    samples: int = 0
    skipped: int = 0  # already in the output
    rejected: int = 0
    seconds: float = 0.0


@dataclass
class _Item:
    rec: Record
    gold: str
    texts: list[str]
    question: str | None = None
    finish: list[str] | None = None
    tokens: list[int] | None = None
    grades: list[Grade] = field(default_factory=list)


# --- reading one record ------------------------------------------------------------------------


def _per_sample(obj: Mapping[str, Any], name: str, n: int, kind: type, path: str, line: int | None) -> list[Any] | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != n:
        raise InputError(path, line, f"must be a list with one entry per sample ({n})", field=name)
    if not all(v is None or (isinstance(v, kind) and not isinstance(v, bool)) for v in value):
        raise InputError(path, line, f"entries must be {kind.__name__}s (or null)", field=name)
    return value


def prepare(rec: Record) -> _Item:
    """The per-sample fields next to the completions, checked (records.py checked the roles)."""
    where, texts = display_name(rec.source), rec.fields["outputs"]
    finish = _per_sample(rec.data, FINISH_FIELD, len(texts), str, where, rec.line)
    tokens = _per_sample(rec.data, TOKENS_FIELD, len(texts), int, where, rec.line)
    question = next((rec.data[n] for n in field_names("question") if isinstance(rec.data.get(n), str)), None)
    return _Item(rec, rec.fields["answer"], texts, question, finish, tokens)


# --- grading -------------------------------------------------------------------------------------


def grade_items(items: list[_Item], grader: Grader, count_cut: CountCut = CountCut.credit) -> None:
    """Grade all samples of a batch of records in one pool call (keeps every worker busy)."""
    grades = grader.grade([(item.gold, text, item.question) for item in items for text in item.texts])
    at = 0
    for item in items:
        item.grades = [apply_count_cut(g, reason, count_cut) for g, reason in zip(grades[at : at + len(item.texts)], item.finish or [None] * len(item.texts))]
        at += len(item.texts)


def apply_count_cut(grade: Grade, finish_reason: str | None, count_cut: CountCut) -> Grade:
    """Under `--count-cut wrong` a sample cut by --max-tokens is wrong whatever it holds."""
    if count_cut == CountCut.wrong and finish_reason == CUT and grade.label:
        return Grade(0, grade.pred, grade.status)
    return grade


def graded_record(item: _Item, source: str, ks: Sequence[int] | None) -> dict[str, Any]:
    labels = [g.label for g in item.grades]
    return {
        **item.rec.data,
        SOURCE_FIELD: source,
        "labels": labels,
        "preds": [g.pred for g in item.grades],
        "grade_status": [g.status for g in item.grades],
        "flipped_by": [g.flipped_by for g in item.grades],
        "pass_at": record_pass_at(len(labels), sum(labels), ks),
    }


def record_stats(gold: str, texts: Sequence[str], grades: Sequence[Grade], finish: Sequence[str] | None, tokens: Sequence[int] | None) -> RecordStats:
    statuses = [g.status for g in grades]
    return RecordStats(
        n=len(grades),
        correct=sum(g.label for g in grades),
        timeouts=statuses.count("timeout"),
        errors=statuses.count("error"),
        no_answer=statuses.count("no_answer"),
        possible_false_negatives=sum(possible_false_negative(gold, t, g) for t, g in zip(texts, grades)),
        bad_gold=bool(grades) and all(s == "bad_gold" for s in statuses),
        truncated=None if finish is None else sum(r == CUT for r in finish),
        too_long=None if finish is None else sum(r == TOO_LONG for r in finish),
        tokens=None if tokens is None or None in tokens else sum(tokens),
        flipped_by=[g.flipped_by for g in grades if g.flipped_by],
    )


def _graded_list(obj: Mapping[str, Any], name: str, n: int, ok, what: str, path: str, line: int) -> list[Any]:
    value = obj.get(name)
    if not isinstance(value, list) or len(value) != n or not all(ok(v) for v in value):
        raise InputError(path, line, f"must be a list of {n} {what} in a graded record; fix it or rerun with --overwrite", field=name)
    return value


def stats_of_graded(obj: Mapping[str, Any], cfg: EvalConfig, path: str = "graded output", line: int = 0) -> RecordStats:
    """Summary contribution of a record as written to the graded output (for re-reading it),
    with every field it relies on checked: the file may have been edited since."""
    answer_name, answer = _first(obj, cfg.answer_names())
    outputs_name, outputs = _first(obj, cfg.output_names())
    if answer is None or outputs is None:
        raise InputError(path, line, "is missing in a graded record; fix it or rerun with --overwrite", field=answer_name if answer is None else outputs_name)
    gold = check_role("answer", answer, path, line, answer_name)
    texts = check_role("outputs", outputs, path, line, outputs_name)
    n = len(texts)
    labels = _graded_list(obj, "labels", n, lambda v: v in (0, 1) and not isinstance(v, float), "0/1 labels", path, line)
    preds = _graded_list(obj, "preds", n, lambda v: v is None or isinstance(v, str), "answers (text or null)", path, line)
    status = _graded_list(obj, "grade_status", n, lambda v: v in STATUS_VALUES, "grading statuses", path, line)
    flipped = [None] * n if obj.get("flipped_by") is None else _graded_list(
        obj, "flipped_by", n, lambda v: v is None or v in SECOND_OPINION_RULES, "second-opinion rule names (or null)", path, line)
    grades = [Grade(int(label), pred, st, rule) for label, pred, st, rule in zip(labels, preds, status, flipped)]
    finish = _per_sample(obj, FINISH_FIELD, n, str, path, line)
    tokens = _per_sample(obj, TOKENS_FIELD, n, int, path, line)
    return record_stats(gold, texts, grades, finish, tokens)


def _first(obj: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any]:
    for name in names:
        if obj.get(name) is not None:
            return name, obj[name]
    return "|".join(names), None


# --- the run -------------------------------------------------------------------------------------


def run_eval(
    io: StageIO,
    cfg: EvalConfig,
    grader: Grader,
    *,
    batch_size: int = 512,
    reporter: ProgressSink | None = None,
) -> EvalReport:
    """Grade every input file into the output, then summarize per file.

    `batch_size` is in samples: that many are graded per pool call and flushed together. The
    summary is computed by re-reading the whole graded output (streaming), so records graded
    by an earlier, interrupted run count too.
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    sources = [source_name(p) for p in cfg.inputs]
    live = {src: FileSummary(src) for src in sources}  # used when the output is not a file
    report = EvalReport()
    for items in _batches(io, batch_size):
        grade_items(items, grader, cfg.count_cut)
        io.write(graded_record(item, source_name(item.rec.source), cfg.ks) for item in items)
        for item in items:
            live[source_name(item.rec.source)].add(record_stats(item.gold, item.texts, item.grades, item.finish, item.tokens))
        report.graded += len(items)
        report.samples += sum(len(item.texts) for item in items)
        reporter.advance(len(items), rate=f"{report.samples / max(time.monotonic() - started, 1e-9):.0f} samples/s")
    reporter.advance(io.skipped + io.rejected)
    report.skipped, report.rejected = io.skipped, io.rejected
    summaries = summarize(io.output, cfg, sources) if is_regular_output(io.output) else live
    labels = row_labels(sources)
    report.rows = [{"file": src, **summaries[src].result(cfg.ks), "name": labels[src]} for src in sources]
    report.average = average(report.rows)
    report.seconds = time.monotonic() - started
    return report


def row_labels(sources: Sequence[str]) -> dict[str, str]:
    """Table row names: the file's stem (`aime24`), or its path where stems collide."""
    stems = {src: ("<stdin>" if src == STDIO else os.path.splitext(os.path.basename(src))[0]) for src in sources}
    return {src: stem if list(stems.values()).count(stem) == 1 else src for src, stem in stems.items()}


def total(inputs: Sequence[str]) -> int | None:
    counts = [count_lines(p) for p in inputs]
    return None if any(c is None for c in counts) else sum(counts)  # type: ignore[misc]


def _batches(io: StageIO, batch_size: int) -> Iterator[list[_Item]]:
    """Checked records in batches of about `batch_size` samples.

    A bad record is set aside under --skip-invalid; otherwise the records read before it are
    still graded and written before the error stops the run.
    """
    return batched(_checked(io), batch_size, weight=lambda item: len(item.texts))


def _checked(io: StageIO) -> Iterator[_Item]:
    for rec in io.pending():
        try:
            yield prepare(rec)
        except InputError as err:
            io.reject_or_raise(err, rec)


def summarize(output: str, cfg: EvalConfig, sources: Sequence[str]) -> dict[str, FileSummary]:
    """Per-source summaries from the graded output file, streamed (covers resumed records)."""
    summaries = {src: FileSummary(src) for src in sources}
    for line, obj in read_output(output, what="graded output"):
        summary = summaries.get(str(obj.get(SOURCE_FIELD)))
        if summary is not None:
            summary.add(stats_of_graded(obj, cfg, output, line))
    return summaries


def summary_line(report: EvalReport, io: StageIO) -> str:
    return (
        f"eval: {report.graded} problems ({report.samples} samples) graded in {report.seconds:.1f} s; "
        f"{report.skipped} already done, {report.rejected} rejected; "
        f"{report.average['timeouts']} timeouts, {report.average['ungradable_golds']} ungradable golds"
    )
