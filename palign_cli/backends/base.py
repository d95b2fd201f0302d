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
from typing import Any, Protocol

from palign_cli.config import ENGINE_PANEL, opt


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
    probe_tokens: int = 0  # of tokens_read: the cuts' own tails and replies


@dataclass(frozen=True)
class BackendOptions:
    """Engine settings under the engines' own names: the one place each default lives.

    Fields made with `opt` are command-line flags on every stage that loads an engine (the
    CLI maps them once); each engine reads the ones it `uses` (see the registry). Settings
    only one engine knows go through `--engine-opt KEY=VALUE` into `engine_opts`, checked
    against that engine's own list.
    """

    model: str
    dtype: str = opt("auto", help="auto, float32, bfloat16, float16.", panel=ENGINE_PANEL)
    max_model_len: int | None = opt(None, help="Context length cap (vLLM's name).", panel=ENGINE_PANEL)
    tensor_parallel_size: int = opt(1, "--tensor-parallel-size", "-tp", help="vllm: tensor parallel GPUs.", panel=ENGINE_PANEL, min=1)
    gpu_memory_utilization: float = opt(0.9, help="vllm: share of GPU memory.", panel=ENGINE_PANEL)
    token_budget: int = opt(16384, help="hf: padded tokens per forward batch.", panel=ENGINE_PANEL, min=256)
    base_url: str | None = opt(None, help="openai: the server, e.g. http://127.0.0.1:8000/v1.", panel=ENGINE_PANEL, envvar="OPENAI_BASE_URL")
    max_concurrency: int = opt(32, help="openai: requests in flight at once.", panel=ENGINE_PANEL, min=1)
    request_timeout: float = opt(600.0, help="openai: seconds one request may take.", panel=ENGINE_PANEL, min=0.1)
    max_retries: int = opt(6, help="openai: retries of a failed request (waits double from 0.5 s to 10 s; Retry-After honoured). Raise it to wait out a restarting server.", panel=ENGINE_PANEL, min=0)
    # engine-only settings (--engine-opt KEY=VALUE), checked against the engine's own list
    data_parallel_size: int = 1  # vllm
    enforce_eager: bool = False  # vllm
    device: str | None = None  # hf: cuda if present, else cpu
    extra: dict[str, Any] = field(default_factory=dict, hash=False)  # vllm: more vllm.LLM arguments


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do beyond `generate` and `score`, declared in one place.

    Stages ask this instead of probing attributes or comparing methods, so a new engine says
    what it supports here and nowhere else.
    """

    count_tokens: bool = False  # count_tokens/count_text are exact (the engine renders prompts)
    curve_in_one_pass: bool = False  # score_cuts reads the shared text once (not per cut)
    # open_session/score_probes/generate_probes: probes answered as short tails on a KV cache
    # of the shared prompt head + text, read lazily and at most once
    probe_on_cached_prefix: bool = False


@dataclass
class ProbeCost:
    """What a round of cached-prefix probes cost: shared text newly read into the cache,
    tokens of the probes' own tails (and replies), and model forwards."""

    cot_tokens: int = 0
    probe_tokens: int = 0
    forwards: int = 0


class PrefixSession(Protocol):
    """An engine's handle on one head prompt + text whose KV cache it keeps between probes."""

    def close(self) -> None: ...


class Backend(ABC):
    name: str = "base"
    capabilities: Capabilities = Capabilities()

    def generate(
        self, prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams]
    ) -> list[list[Sample]]:
        """Per prompt, `params.n` samples. A sequence of params gives each prompt its own.

        The request policy every engine shares lives here: `max_tokens` is capped by the
        context left after the prompt (where the engine can count tokens), a prompt with no
        room left gets `prompt_too_long` samples without reaching the engine, and greedy
        requests for n > 1 are asked once and copied (greedy samples are identical; vLLM
        refuses that combination). Engines implement `_generate`.
        """
        plist = per_prompt_params(prompts, params)
        rooms = [self._room(prompt, p) for prompt, p in zip(prompts, plist)]
        live = [i for i, room in enumerate(rooms) if room is None or room > 0]
        asked = [_fit(plist[i], rooms[i]) for i in live]
        answers = self._generate([prompts[i] for i in live], asked) if live else []
        results = [[Sample("", PROMPT_TOO_LONG, 0) for _ in range(p.n)] for p in plist]
        for i, samples in zip(live, answers, strict=True):
            n = plist[i].n
            results[i] = samples if len(samples) >= n else [replace(samples[0]) for _ in range(n)]
        return results

    def _room(self, prompt: Prompt, params: SamplingParams) -> int | None:
        """Tokens the context leaves for the reply, where the engine can tell."""
        limit = self.context_length()
        if not limit or not self.capabilities.count_tokens:
            return None
        return limit - (self.count_tokens(prompt) or 0)

    @abstractmethod
    def _generate(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]) -> list[list[Sample]]:
        """The engine's own sampling: one params per prompt, already fitted to the context,
        n == 1 for greedy requests."""

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

    def open_session(self, head: Prompt, text: str) -> PrefixSession | None:
        """A session for probing `head` (holding `{cut}` once) at cuts of `text`, for engines
        whose capabilities say `probe_on_cached_prefix`; None where it cannot be shared."""
        return None

    def score_probes(
        self, probes: Sequence[tuple[PrefixSession, int]], candidates: Sequence[str]
    ) -> tuple[list[list[float]], ProbeCost]:
        """Per probe (session, cut), the summed log-probability of each candidate reply:
        what `score` gives for the probe's own prompt."""
        raise NotImplementedError(f"{self.name} cannot probe on a cached prefix")

    def generate_probes(
        self, probes: Sequence[tuple[PrefixSession, int]], params: Sequence[SamplingParams]
    ) -> tuple[list[Sample], ProbeCost]:
        """One sample per probe (session, cut): what `generate` gives for its own prompt."""
        raise NotImplementedError(f"{self.name} cannot probe on a cached prefix")

    def prompt_token_counts(self) -> tuple[int, int] | None:
        """(prompt tokens sent, of those found in the engine's prefix cache) so far, where the
        engine tells (None elsewhere): a stage can say how much it really made the engine read."""
        return None

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


def _fit(p: SamplingParams, room: int | None) -> SamplingParams:
    """The request an engine receives: capped to the room left, one sample when greedy."""
    changes: dict[str, Any] = {}
    if room is not None and room < p.max_tokens:
        changes["max_tokens"] = room
    if p.temperature <= 0 and p.n > 1:
        changes["n"] = 1
    return replace(p, **changes) if changes else p


def per_prompt_params(
    prompts: Sequence[Prompt], params: SamplingParams | Sequence[SamplingParams]
) -> list[SamplingParams]:
    if isinstance(params, SamplingParams):
        return [params] * len(prompts)
    params = list(params)
    if len(params) != len(prompts):
        raise ValueError(f"{len(params)} sampling params for {len(prompts)} prompts")
    return params
