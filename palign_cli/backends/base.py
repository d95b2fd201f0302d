"""The one small interface every engine implements.

Stages speak only this: `generate` samples completions, `score` gives the log-probability of
fixed candidate replies, and `score_cuts` scores candidates at many cut points of one text
(truncate's sufficiency curve). Prompts are chat conversations rendered with the model's own
chat template, so hf and vllm see identical token sequences.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class SamplingParams:
    """vLLM's names and meanings; `top_k=-1` and `seed=None` mean off."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    repetition_penalty: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def with_seed(self, seed: int | None) -> SamplingParams:
        return replace(self, seed=seed)


@dataclass(frozen=True)
class Prompt:
    """A chat conversation, or a raw text prompt when `messages` is empty.

    `prefill` starts the assistant turn with given text (align's prefill mode): the model
    continues it. `enable_thinking` is handed to chat templates that know the switch (Qwen3).
    """

    messages: tuple[tuple[str, str], ...] = ()
    raw: str | None = None
    prefill: str = ""
    enable_thinking: bool | None = None

    @classmethod
    def user(cls, text: str, *, prefill: str = "", enable_thinking: bool | None = None) -> Prompt:
        return cls(messages=(("user", text),), prefill=prefill, enable_thinking=enable_thinking)

    @classmethod
    def text(cls, raw: str) -> Prompt:
        return cls(raw=raw)

    def chat(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.messages]


PROMPT_TOO_LONG = "prompt_too_long"  # finish_reason of a prompt with no room in the context


@dataclass
class Sample:
    text: str
    finish_reason: str  # "stop", "length" (cut by max_tokens) or PROMPT_TOO_LONG
    tokens: int


@dataclass
class CutScores:
    """Log-probabilities of each candidate reply at each cut point of one text.

    `logprobs[j][c]` belongs to cut j (in the order given) and candidate c. `cuts_scored`
    is how many of the requested cuts fitted the context; later ones are absent.
    """

    logprobs: list[list[float]]
    tokens_read: int = 0
    cuts_scored: int = 0


@dataclass(frozen=True)
class BackendOptions:
    """Engine settings passed through under the engines' own names."""

    model: str
    dtype: str = "auto"
    max_model_len: int | None = None
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False
    device: str | None = None  # hf: cuda if present, else cpu
    token_budget: int = 16384  # hf: padded tokens per forward batch
    base_url: str | None = None  # openai
    max_concurrency: int = 32  # openai
    request_timeout: float = 600.0  # openai
    max_retries: int = 6  # openai
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do beyond `generate` and `score`, declared in one place.

    Stages ask this instead of probing attributes or comparing methods, so a new engine says
    what it supports here and nowhere else.
    """

    count_tokens: bool = False  # count_tokens/count_text are exact (the engine renders prompts)
    curve_in_one_pass: bool = False  # score_cuts reads the shared text once (not per cut)


class Backend(ABC):
    name: str = "base"
    capabilities: Capabilities = Capabilities()

    @abstractmethod
    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Sample]]:
        """Per prompt, `params.n` samples. A sequence of params gives each prompt its own."""

    @abstractmethod
    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """Per prompt, the summed log-probability of each candidate as the assistant reply."""

    def score_cuts(
        self,
        head: Prompt,
        text: str,
        cuts: Sequence[int],
        candidates: Sequence[str],
    ) -> CutScores:
        """Score candidates for every probe prompt `head` with `{cut}` replaced by text[:cut].

        `head` is a chat prompt whose message contains the placeholder `{cut}` exactly once.
        Every probe shares the text before the cut, so engines override this to read it once;
        this default builds every probe and calls `score`.
        """
        prompts = [probe_prompt(head, text[:c]) for c in cuts]
        scores = self.score(prompts, candidates)
        return CutScores(scores, cuts_scored=len(cuts))

    def context_length(self) -> int | None:
        """Tokens the model can attend to, when known."""
        return None

    def count_tokens(self, prompt: Prompt) -> int | None:
        """Tokens the engine reads for `prompt` (None where it cannot tell: a remote server)."""
        return None

    def count_text(self, text: str) -> int | None:
        """Tokens of a bare text, such as a candidate reply (None where unknown)."""
        return None

    def close(self) -> None:
        """Release the engine (GPU memory, worker processes, HTTP pools)."""


CUT = "{cut}"


def probe_prompt(head: Prompt, filled: str) -> Prompt:
    """The head prompt with its `{cut}` placeholder replaced by one probe's text."""
    messages = tuple((role, content.replace(CUT, filled)) for role, content in head.messages)
    return replace(head, messages=messages)


def per_prompt_params(
    prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams]
) -> list[SamplingParams]:
    if isinstance(params, SamplingParams):
        return [params] * len(prompts)
    params = list(params)
    if len(params) != len(prompts):
        raise ValueError(f"{len(params)} sampling params for {len(prompts)} prompts")
    return params
