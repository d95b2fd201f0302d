"""Align: the student continues from its own sufficient prefix; verified continuations become SFT targets.

For each truncated record the student samples `n` continuations of the prefix, either asked in
a user turn to continue the draft (the paper's prompt) or with the prefix already written at
the start of its own reply (prefill). Each continuation's final answer is graded against the
gold with the same grader `palign eval` uses; the first verified one becomes the target
`<Begin_of_Prefix>{prefix}<End_of_Prefix>\\n{continuation}`. A sample cut by the token limit
is never verified, even when a boxed answer appears in it: its reasoning did not finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from palign_cli.backends.base import PROMPT_TOO_LONG, Backend, Prompt, Sample, SamplingParams
from palign_cli.config import Fingerprinted, Sampling
from palign_cli.grading import RULES
from palign_cli.prompts import ALIGN_PROMPT, SOLVE_PROMPT, align_prompt, sft_target, solve_prompt
from palign_cli.records import Record, StageIO
from palign_cli.reporting import NullReporter, ProgressSink
from palign_cli.seeding import record_seed

MODES = ("prompt", "prefill")
# The reference's continuation settings (temperature 0.6, top_p 0.9, repetition_penalty 1.05).
SAMPLING = Sampling(n=4, temperature=0.6, top_p=0.9, repetition_penalty=1.05, max_tokens=32768)


class GraderLike(Protocol):
    def grade(self, pairs: Sequence[tuple[str, str]]) -> list[Any]: ...


@dataclass(frozen=True)
class AlignConfig(Fingerprinted):
    """Everything that changes the samples or the targets: it is the resume fingerprint."""

    model: str
    backend: str
    mode: str = "prompt"
    sampling: Sampling = SAMPLING
    markers: str = "prefix"
    verify: bool = True
    prompt_template: str | None = None  # None: the mode's own (ALIGN_PROMPT, or SOLVE_PROMPT)
    grade_timeout: float = 5.0
    strict: bool = False  # math-verify's verdict only (no second opinion), as `eval --strict`

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.prompt_template is None:
            object.__setattr__(self, "prompt_template", default_template(self.mode))

    def request(self, rid: str) -> SamplingParams:
        return self.sampling.params(record_seed(self.sampling.seed, rid))

    def fingerprint(self) -> dict[str, Any]:
        """The options, and the grading rules' version: `verified` depends on both, so an
        output graded under other rules is not resumed into one with mixed labels."""
        return {**super().fingerprint(), "grading_rules": RULES}


def default_template(mode: str) -> str:
    return ALIGN_PROMPT if mode == "prompt" else SOLVE_PROMPT


def template_placeholders(mode: str) -> tuple[str, ...]:
    return ("{question}", "{prefix}") if mode == "prompt" else ("{question}",)


def build_prompt(question: str, prefix: str, cfg: AlignConfig) -> Prompt:
    """prompt: the reference's user turn holding question and draft. prefill: the training
    prompt as the user turn, and the assistant's reply already begun with the prefix."""
    thinking = cfg.sampling.enable_thinking
    if cfg.mode == "prefill":
        return Prompt.user(solve_prompt(question, cfg.prompt_template), prefill=prefix, enable_thinking=thinking)
    return Prompt.user(align_prompt(question, prefix, cfg.prompt_template), enable_thinking=thinking)


@dataclass
class AlignStats:
    problems: int = 0
    verified: int = 0
    unchecked: int = 0
    samples: int = 0
    cut_by_length: int = 0
    grade_timeouts: int = 0
    no_room: int = 0
    target_chars: int = 0

    @property
    def verified_share(self) -> float:
        return self.verified / self.problems if self.problems else 0.0

    @property
    def mean_target_chars(self) -> float:
        with_target = self.verified + self.unchecked
        return self.target_chars / with_target if with_target else 0.0


def choose(samples: list[dict[str, Any]], verify: bool) -> dict[str, Any] | None:
    """The first verified sample; without verification, the first that finished ("stop":
    neither cut by --max-tokens nor a prompt that did not fit the context)."""
    if verify:
        return next((s for s in samples if s["verified"]), None)
    return next((s for s in samples if s["finish_reason"] == "stop"), None)


def grade_samples(
    grader: GraderLike | None, golds: Sequence[str | None], results: Sequence[Sequence[Sample]]
) -> list[list[dict[str, Any]]]:
    """Per record, its samples as output dicts; graded in one pool call for the whole batch."""
    out = [[{"text": s.text, "finish_reason": s.finish_reason, "pred": None, "verified": None} for s in samples] for samples in results]
    if grader is None:
        return out
    pairs, where = [], []
    for i, (gold, samples) in enumerate(zip(golds, results)):
        for j, s in enumerate(samples):
            pairs.append((str(gold), s.text))
            where.append((i, j))
    for (i, j), grade in zip(where, grader.grade(pairs)):
        sample = out[i][j]
        sample["pred"] = grade.pred
        sample["verified"] = bool(grade.label == 1 and sample["finish_reason"] != "length")
        sample["grade_status"] = grade.status
    return out


def run_align(
    io: StageIO,
    backend: Backend,
    cfg: AlignConfig,
    grader: GraderLike | None,
    *,
    batch_size: int = 16,
    reporter: ProgressSink | None = None,
) -> AlignStats:
    """Sample, grade and write one batch of records at a time (each batch is flushed)."""
    if cfg.verify and grader is None:
        raise ValueError("verification needs a grader")
    reporter = reporter or NullReporter()
    stats = AlignStats()
    for batch in io.batches(batch_size):
        prompts = [build_prompt(rec.fields["question"], rec.fields["prefix"], cfg) for rec in batch]
        generated = backend.generate(prompts, [cfg.request(rec.id) for rec in batch])
        # a prompt with no room left to continue never reached the engine: no samples to keep
        results = [[] if all(s.finish_reason == PROMPT_TOO_LONG for s in samples) else samples for samples in generated]
        golds = [rec.fields.get("answer") for rec in batch]
        graded = grade_samples(grader if cfg.verify else None, golds, results)
        io.write(_record(rec, samples, cfg, stats) for rec, samples in zip(batch, graded))
        stats.no_room += sum(not samples for samples in results)
        for samples in graded:
            stats.samples += len(samples)
            stats.cut_by_length += sum(s["finish_reason"] == "length" for s in samples)
            stats.grade_timeouts += sum(s.get("grade_status") == "timeout" for s in samples)
        reporter.advance(len(batch), rate=f"{stats.verified_share:.0%} verified")
    return stats


def _record(rec: Record, samples: list[dict[str, Any]], cfg: AlignConfig, stats: AlignStats) -> dict[str, Any]:
    chosen = choose(samples, cfg.verify)
    target = sft_target(rec.fields["prefix"], chosen["text"], cfg.markers) if chosen else None
    # verified: true/false when graded; null when --no-verify (nothing was checked).
    verified: bool | None = chosen is not None if cfg.verify else None
    stats.problems += 1
    stats.verified += verified is True
    if target is not None:
        stats.unchecked += verified is None
        stats.target_chars += len(target)
    return {**rec.data, "samples": samples, "verified": verified, "target": target}


def summary(stats: AlignStats, io: StageIO, verify: bool = True) -> str:
    share = f"{stats.verified} verified ({stats.verified_share:.0%})" if verify else f"{stats.unchecked} with a target (unchecked)"
    return (
        f"align: {stats.problems} problems, {share}, mean target length {stats.mean_target_chars:.0f} chars; "
        f"{stats.samples} samples, {stats.cut_by_length} cut by --max-tokens, {stats.grade_timeouts} grading timeouts, "
        f"{stats.no_room} prompts without room to continue; {io.skipped} already done, {io.rejected} rejected"
    )
