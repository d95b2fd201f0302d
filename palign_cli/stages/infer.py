"""Sample n completions per benchmark problem with the prompt the student was trained on."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from palign_cli.backends.base import Backend, Prompt, SamplingParams
from palign_cli.prompts import SOLVE_PROMPT, solve_prompt
from palign_cli.records import Record, StageIO
from palign_cli.reporting import NullReporter, ProgressSink
from palign_cli.seeding import record_seed


@dataclass(frozen=True)
class InferConfig:
    """Everything that changes the samples: it is the resume fingerprint."""

    model: str
    backend: str
    n: int = 3
    temperature: float = 0.6
    top_p: float = 0.9
    top_k: int = -1
    repetition_penalty: float = 1.05
    max_tokens: int = 4096
    seed: int = 0
    prompt_template: str = SOLVE_PROMPT
    enable_thinking: bool | None = None

    def fingerprint(self) -> dict[str, Any]:
        return asdict(self)

    def sampling(self, rid: str) -> SamplingParams:
        return SamplingParams(
            n=self.n,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            max_tokens=self.max_tokens,
            seed=record_seed(self.seed, rid),
        )


@dataclass
class InferStats:
    records: int = 0
    samples: int = 0
    tokens: int = 0
    truncated: int = 0


def build_prompt(question: str, cfg: InferConfig) -> Prompt:
    """The user turn `palign train` trains on (prompts.solve_prompt builds both)."""
    return Prompt.user(solve_prompt(question, cfg.prompt_template), enable_thinking=cfg.enable_thinking)


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
            [cfg.sampling(rec.id) for rec in batch],
        )
        io.write(_record(rec, samples) for rec, samples in zip(batch, results))
        for samples in results:
            stats.samples += len(samples)
            stats.tokens += sum(s.tokens for s in samples)
            stats.truncated += sum(s.finish_reason == "length" for s in samples)
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
