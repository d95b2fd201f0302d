"""Sample n completions per benchmark problem with the prompt the student was trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from palign_cli.backends.base import PROMPT_TOO_LONG, Backend, Prompt, SamplingParams
from palign_cli.config import Fingerprinted, Sampling
from palign_cli.prompts import SOLVE_PROMPT, solve_prompt
from palign_cli.records import Record, StageIO
from palign_cli.reporting import NullReporter, ProgressSink
from palign_cli.seeding import record_seed

# The reference's inference settings (n=3, temperature 0.6, top_p 0.9, repetition_penalty 1.05).
SAMPLING = Sampling(n=3, temperature=0.6, top_p=0.9, repetition_penalty=1.05, max_tokens=4096)
ADDS = ("outputs", "finish_reasons", "output_tokens")


@dataclass(frozen=True)
class InferConfig(Fingerprinted):
    """Everything that changes the samples: it is the resume fingerprint."""

    model: str
    backend: str
    sampling: Sampling = SAMPLING
    prompt_template: str = SOLVE_PROMPT

    def request(self, rid: str) -> SamplingParams:
        return self.sampling.params(record_seed(self.sampling.seed, rid))


@dataclass
class InferStats:
    records: int = 0
    samples: int = 0
    tokens: int = 0
    truncated: int = 0
    too_long: int = 0


def build_prompt(question: str, cfg: InferConfig) -> Prompt:
    """The user turn `palign train` trains on (prompts.solve_prompt builds both)."""
    return Prompt.user(solve_prompt(question, cfg.prompt_template), enable_thinking=cfg.sampling.enable_thinking)


def run_infer(
    io: StageIO,
    backend: Backend,
    cfg: InferConfig,
    *,
    batch_size: int = 64,
    reporter: ProgressSink | None = None,
) -> InferStats:
    reporter = reporter or NullReporter()
    stats = InferStats()
    for batch in io.batches(batch_size):
        results = backend.generate(
            [build_prompt(rec.fields["question"], cfg) for rec in batch],
            [cfg.request(rec.id) for rec in batch],
        )
        io.write(_record(rec, samples) for rec, samples in zip(batch, results))
        for samples in results:
            stats.samples += len(samples)
            stats.tokens += sum(s.tokens for s in samples)
            stats.truncated += sum(s.finish_reason == "length" for s in samples)
            stats.too_long += sum(s.finish_reason == PROMPT_TOO_LONG for s in samples)
        stats.records += len(batch)
        reporter.advance(len(batch), rate=f"{stats.tokens} tokens")
    return stats


def _record(rec: Record, samples) -> dict[str, Any]:
    return {
        **rec.data,
        "outputs": [s.text for s in samples],
        "finish_reasons": [s.finish_reason for s in samples],
        "output_tokens": [s.tokens for s in samples],
    }


def summary(stats: InferStats, io: StageIO) -> str:
    too_long = f", {stats.too_long} with a prompt longer than the context" if stats.too_long else ""
    return (
        f"infer: {stats.records} problems, {stats.samples} samples, {stats.tokens} tokens, "
        f"{stats.truncated} cut by --max-tokens{too_long}; {io.skipped} already done, {io.rejected} rejected"
    )
