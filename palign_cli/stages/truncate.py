"""Truncate: per problem, the shortest CoT prefix the student itself judges sufficient.

The paper's loop judged one prefix of one problem at a time. Here every problem's search is a
state machine (stages/search.py) and a scheduler keeps many in flight: one probe of each
active search goes into every engine call (a round). Engines that can probe on a cached
prefix (hf) keep each problem's judge prompt head + CoT in a KV cache, read lazily and at
most once, and answer a probe as a short tail on it, for both judges; the decisions are those
of probing each prefix on its own prompt. With `--save-curve` the logprob judge scores every
unit boundary (the sufficiency curve, one pass per CoT) and the search replays its decisions
on it. Other engines (vLLM, openai) are sent each probe's whole prompt; vLLM's prefix cache
shares what probes of one CoT have in common.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from palign_cli.backends.base import CUT, Backend, ProbeCost, Prompt, SamplingParams
from palign_cli.config import Fingerprinted, Sampling
from palign_cli.errors import UsageError
from palign_cli.prompts import ENOUGH, JUDGE_PROMPT, NOT_ENOUGH, fill
from palign_cli.records import Record, StageIO
from palign_cli.reporting import NullReporter, ProgressSink
from palign_cli.seeding import record_seed
from palign_cli.stages.search import Search, Strategy, parse_strategy, schedule
from palign_cli.units import UNIT_KINDS, Units, split_units

JUDGES = ("generate", "logprob")
# The judge: greedy, short replies, thinking off (as the paper's code calls it).
SAMPLING = Sampling(temperature=0.0, max_tokens=16, enable_thinking=False)
SAMPLING_FLAGS = ("temperature", "top_p", "top_k", "max_tokens", "seed", "enable_thinking")


@dataclass(frozen=True)
class TruncateConfig(Fingerprinted):
    """Everything that changes the chosen prefixes: it is the resume fingerprint."""

    model: str
    backend: str
    unit: str = "sentence"
    judge: str = "generate"
    search: str = "binary"
    threshold: float = 0.5
    sampling: Sampling = SAMPLING
    judge_prompt: str = JUDGE_PROMPT
    save_curve: bool = False
    max_model_len: int | None = None

    def __post_init__(self) -> None:
        if self.unit not in UNIT_KINDS:
            raise UsageError(f"--unit must be one of {', '.join(UNIT_KINDS)}, got '{self.unit}'")
        if self.judge not in JUDGES:
            raise UsageError(f"--judge must be generate or logprob, got '{self.judge}'")
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold must be within [0, 1], got {self.threshold}")
        if self.save_curve and self.judge != "logprob":
            raise UsageError("--save-curve needs --judge logprob (the curve is P(ENOUGH) per boundary)")
        parse_strategy(self.search)

    @property
    def strategy(self) -> Strategy:
        return parse_strategy(self.search)

    def request(self, rid: str, k: int) -> SamplingParams:
        """Greedy by default; a probe's seed depends on its record and k, never on its batch."""
        return self.sampling.params(record_seed(self.sampling.seed, f"{rid}#{k}"), n=1)


def is_enough(reply: str) -> bool:
    """The reference's verdict rule: the reply contains "[ENOUGH]" or is exactly "ENOUGH"."""
    return ENOUGH in reply or reply.strip() == "ENOUGH"


@dataclass
class Problem:
    """One record being searched: its units, how many fit the judge's context, its trace."""

    record: Record
    question: str
    units: Units
    search: Search
    fit: int
    trace: list[dict[str, Any]] = field(default_factory=list)
    curve: list[float] | None = None
    session: Any = None  # the engine's cached prefix of this problem's probes, if any


@dataclass
class TruncateStats:
    """Counts for the summary line and the benchmark.

    `cot_tokens`: judge-prompt tokens (head + CoT) the engine was given to read: once per
    problem and only as far as the search went on a cached prefix, every probe's whole prompt
    otherwise (an engine's own prefix cache may save part of that). `floor_tokens`: one read
    of every full judge prompt, the least a judge that sees whole CoTs can read.
    `probe_tokens`: the probes' own tails, replies and decode steps on a cached prefix.
    `cache_hits`: of `cot_tokens`, those the engine's own prefix cache held; where the engine
    counts (vLLM), `cot_tokens` is its count of prompt tokens sent, scoring requests included.
    """

    problems: int = 0
    ratio_sum: float = 0.0
    sufficient: int = 0
    judge_calls: int = 0
    backend_calls: int = 0
    forwards: int = 0
    cot_tokens: int = 0
    probe_tokens: int = 0
    floor_tokens: int = 0
    cache_hits: int = 0
    bounded: int = 0

    @property
    def tokens_read(self) -> int:
        """Tokens the engine computed: judge prompts (less its prefix-cache hits) and probes."""
        return self.cot_tokens - self.cache_hits + self.probe_tokens

    def add(self, cost: ProbeCost) -> None:
        self.cot_tokens += cost.cot_tokens
        self.probe_tokens += cost.probe_tokens
        self.forwards += cost.forwards

    @property
    def mean_ratio(self) -> float:
        return self.ratio_sum / self.problems if self.problems else 0.0

    @property
    def share_sufficient(self) -> float:
        return self.sufficient / self.problems if self.problems else 0.0


# ----- token counting and the context bound ----------------------------------------------

TokenCounter = Callable[[Prompt], int]


def token_counter(backend: Backend | None) -> TokenCounter | None:
    """Counts a prompt's tokens the engine's own way, where it can (hf, vllm)."""
    if backend is None or not backend.capabilities.count_tokens:
        return None
    return backend.count_tokens  # type: ignore[return-value]


def judge_prompt_for(question: str, reasoning: str, cfg: TruncateConfig) -> Prompt:
    """One user turn; thinking off by default, so a Qwen3 student answers at once."""
    return Prompt.user(
        fill(cfg.judge_prompt, question=question, reasoning_part=reasoning),
        enable_thinking=cfg.sampling.enable_thinking,
    )


def units_that_fit(units: Units, fits: Callable[[int], bool]) -> int:
    """The largest k whose probe fits the context (prompts grow with k, so bisect)."""
    m = len(units)
    if fits(m):
        return m
    lo, hi = 0, m - 1  # invariant: lo fits (0 trivially), hi+1 does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


class ContextBound:
    """Whether the probe of k units, plus the reply's room, fits the engine's context."""

    def __init__(self, backend: Backend | None, cfg: TruncateConfig):
        self.count = token_counter(backend)
        self.max_len = backend.context_length() if backend is not None else None
        self.cfg = cfg
        self.room = self._reply_room(backend)

    def _reply_room(self, backend: Backend | None) -> int:
        if self.cfg.judge == "generate":
            return self.cfg.sampling.max_tokens
        if backend is None or not backend.capabilities.count_tokens:
            return 16
        # +1: an engine that scores by prompt logprobs still wants one token of room.
        return max(backend.count_text(c) or 0 for c in (ENOUGH, NOT_ENOUGH)) + 1

    def tokens(self, question: str, units: Units, k: int) -> int:
        """Tokens of the judge prompt holding k units (0 where the engine cannot count)."""
        if self.count is None:
            return 0
        return self.count(judge_prompt_for(question, units.prefix(k), self.cfg))

    def fit(self, question: str, units: Units) -> int:
        if self.count is None or self.max_len is None:
            return len(units)
        count, limit = self.count, self.max_len - self.room

        def fits(k: int) -> bool:
            return count(judge_prompt_for(question, units.prefix(k), self.cfg)) <= limit

        return units_that_fit(units, fits)


# ----- judges ---------------------------------------------------------------------------


class ProbeJudge:
    """Judges the probes of a round in one engine call; subclasses say how a probe is judged."""

    def __init__(self, backend: Backend, cfg: TruncateConfig, stats: TruncateStats):
        self.backend, self.cfg, self.stats = backend, cfg, stats
        self.count = token_counter(backend)

    def prepare(self, problem: Problem) -> None:
        """Nothing to do up front: each probe is judged when the search asks for it."""

    def settle(self, problem: Problem) -> None:
        """Nothing held per problem."""

    def judge(self, probes: list[tuple[Problem, int]]) -> list[dict[str, Any]]:
        prompts = [judge_prompt_for(p.question, p.units.prefix(k), self.cfg) for p, k in probes]
        entries = self._entries(probes, prompts)
        self.stats.backend_calls += 1
        self.stats.judge_calls += len(probes)
        if self.count is not None:
            self.stats.cot_tokens += sum(self.count(prompt) for prompt in prompts)
        return entries

    def _entries(self, probes: list[tuple[Problem, int]], prompts: list[Prompt]) -> list[dict[str, Any]]:
        raise NotImplementedError


class GenerateJudge(ProbeJudge):
    """Samples a short reply per probe; the reference's rule reads the verdict from it."""

    def _entries(self, probes, prompts):
        params = [self.cfg.request(p.record.id, k) for p, k in probes]
        results = self.backend.generate(prompts, params)
        return [_reply_entry(k, samples[0].text) for (_, k), samples in zip(probes, results, strict=True)]


def _reply_entry(k: int, reply: str) -> dict[str, Any]:
    return {"k": k, "verdict": "ENOUGH" if is_enough(reply) else "NOT_ENOUGH", "reply": reply}


class ScoreJudge(ProbeJudge):
    """P(ENOUGH) per probe, for engines that cannot read a whole curve in one pass.

    vLLM, for one, ignores its prefix cache for requests that ask for prompt log-probabilities,
    so scoring every boundary would re-read the CoT once per boundary; probing only what the
    search asks costs log2(m) prompts instead of m, with the same decisions.
    """

    def _entries(self, probes, prompts):
        scores = self.backend.score(prompts, [ENOUGH, NOT_ENOUGH])
        return [_logprob_entry(k, p_enough(lp[0], lp[1]), self.cfg) for (_, k), lp in zip(probes, scores, strict=True)]


def _logprob_entry(k: int, p: float, cfg: TruncateConfig) -> dict[str, Any]:
    verdict = "ENOUGH" if p >= cfg.threshold else "NOT_ENOUGH"
    return {"k": k, "verdict": verdict, "p_enough": round(p, 6)}


def p_enough(logprob_enough: float, logprob_not: float) -> float:
    """P(ENOUGH) as the softmax over the two candidate replies' summed log-probabilities."""
    return 1.0 / (1.0 + math.exp(max(min(logprob_not - logprob_enough, 700.0), -700.0)))


class PrefixJudge:
    """Probes as short tails on each problem's cached prefix, for engines that can (hf).

    A problem's session is opened when it is admitted (nothing is read yet); each round, the
    engine extends the caches only as far as this round's probes reach and answers all the
    probes in batched forwards. A problem whose prompt cannot share a prefix (the question
    holds the placeholder text) is judged by the plain judge instead.
    """

    def __init__(self, backend: Backend, cfg: TruncateConfig, stats: TruncateStats):
        self.backend, self.cfg, self.stats = backend, cfg, stats
        plain = GenerateJudge if cfg.judge == "generate" else ScoreJudge
        self.plain = plain(backend, cfg, stats)

    def prepare(self, problem: Problem) -> None:
        head = judge_prompt_for(problem.question, CUT, self.cfg)
        if problem.fit and head.messages[0][1].count(CUT) == 1:
            problem.session = self.backend.open_session(head, problem.units.text)

    def settle(self, problem: Problem) -> None:
        """Release a finished problem's cache; trim it to what the search may still ask."""
        if problem.session is None:
            return
        if problem.search.done:
            problem.session.close()
            problem.session = None
        elif problem.search.reach < problem.search.m:
            problem.session.trim_to_cut(problem.units.end(problem.search.reach))

    def judge(self, probes: list[tuple[Problem, int]]) -> list[dict[str, Any]]:
        cached = [i for i, (p, _) in enumerate(probes) if p.session is not None]
        entries: list[dict[str, Any]] = [{} for _ in probes]
        plain = [i for i in range(len(probes)) if probes[i][0].session is None]
        if plain:
            for i, entry in zip(plain, self.plain.judge([probes[i] for i in plain]), strict=True):
                entries[i] = entry
        if cached:
            for i, entry in zip(cached, self._cached([probes[i] for i in cached]), strict=True):
                entries[i] = entry
        return entries

    def _cached(self, probes: list[tuple[Problem, int]]) -> list[dict[str, Any]]:
        for p, _ in probes:  # how far the engine may read ahead for this search
            p.session.reach = p.units.end(p.search.reach)
        pairs = [(p.session, p.units.end(k)) for p, k in probes]
        if self.cfg.judge == "logprob":
            scores, cost = self.backend.score_probes(pairs, [ENOUGH, NOT_ENOUGH])
            entries = [_logprob_entry(k, p_enough(*lp), self.cfg) for (_, k), lp in zip(probes, scores, strict=True)]
        else:
            params = [self.cfg.request(p.record.id, k) for p, k in probes]
            samples, cost = self.backend.generate_probes(pairs, params)
            entries = [_reply_entry(k, sample.text) for (_, k), sample in zip(probes, samples, strict=True)]
        self.stats.add(cost)
        self.stats.backend_calls += 1
        self.stats.judge_calls += len(probes)
        return entries


class CurveJudge:
    """Scores [ENOUGH] vs [NOT_ENOUGH] at every unit boundary of a CoT at once, then answers
    the search's probes from that curve (decisions identical to probing one at a time)."""

    def __init__(self, backend: Backend, cfg: TruncateConfig, stats: TruncateStats):
        self.backend, self.cfg, self.stats = backend, cfg, stats

    def prepare(self, problem: Problem) -> None:
        """Score the whole curve when a problem is admitted (the engine may bound it further)."""
        problem.curve = self.curve(problem.question, problem.units, problem.fit)
        problem.fit = len(problem.curve)
        problem.search = self.cfg.strategy.make(problem.fit, len(problem.units))

    def settle(self, problem: Problem) -> None:
        """Nothing held per problem."""

    def judge(self, probes: list[tuple[Problem, int]]) -> list[dict[str, Any]]:
        entries = []
        for problem, k in probes:
            assert problem.curve is not None and k <= len(problem.curve), "probe beyond the curve"
            entries.append(_logprob_entry(k, problem.curve[k - 1], self.cfg))
        self.stats.judge_calls += len(probes)
        return entries

    def curve(self, question: str, units: Units, fit: int) -> list[float]:
        """P(ENOUGH) for k = 1..fit, or fewer where the engine could score fewer cuts."""
        cuts = list(units.ends[:fit])
        if not cuts:
            return []
        candidates = [ENOUGH, NOT_ENOUGH]
        head = judge_prompt_for(question, CUT, self.cfg)
        if head.messages[0][1].count(CUT) == 1:
            scored = self.backend.score_cuts(head, units.text, cuts, candidates)
            logprobs, n = scored.logprobs, min(scored.cuts_scored, len(cuts))
            self.stats.cot_tokens += scored.tokens_read - scored.probe_tokens
            self.stats.probe_tokens += scored.probe_tokens
        else:  # the question itself contains "{cut}": build every probe explicitly
            prompts = [judge_prompt_for(question, units.text[:c], self.cfg) for c in cuts]
            logprobs, n = self.backend.score(prompts, candidates), len(cuts)
        self.stats.backend_calls += 1
        return [p_enough(lp[0], lp[1]) for lp in logprobs[:n]]


# ----- the stage ------------------------------------------------------------------------


Judge = GenerateJudge | ScoreJudge | PrefixJudge | CurveJudge


def make_judge(backend: Backend | None, cfg: TruncateConfig, stats: TruncateStats) -> Judge | None:
    """--save-curve: every boundary scored (the curve). Otherwise only the probes the search
    asks: on a cached prefix where the engine can (hf), else each probe's whole prompt."""
    if not cfg.strategy.needs_judge:
        return None
    if backend is None:
        raise UsageError(f"--search {cfg.search} needs a judge model")
    caps = backend.capabilities
    if cfg.save_curve:
        return CurveJudge(backend, cfg, stats)
    if caps.probe_on_cached_prefix:
        return PrefixJudge(backend, cfg, stats)
    if cfg.judge == "generate":
        return GenerateJudge(backend, cfg, stats)
    return CurveJudge(backend, cfg, stats) if caps.curve_in_one_pass else ScoreJudge(backend, cfg, stats)


def problems(
    io: StageIO, cfg: TruncateConfig, bound: ContextBound, judge: Judge | None, stats: TruncateStats
) -> Iterator[Problem]:
    """Pending records as problems: units split, context bound found, search started."""
    strategy = cfg.strategy
    for rec in io.pending():
        question, cot = rec.fields["question"], rec.fields["cot"]  # strings: records.py checked
        units = split_units(cot, cfg.unit)
        fit = len(units)
        if judge is not None:
            fit = bound.fit(question, units)
            stats.floor_tokens += bound.tokens(question, units, fit)
        problem = Problem(rec, question, units, strategy.make(fit, len(units)), fit)
        if judge is not None:
            judge.prepare(problem)
        yield problem


def finish(problem: Problem, cfg: TruncateConfig) -> dict[str, Any]:
    """The output record: input fields untouched, truncate's own fields added."""
    outcome = problem.search.outcome()
    m = len(problem.units)
    out = {
        **problem.record.data,
        "prefix": problem.units.prefix(outcome.k),
        "prefix_units": outcome.k,
        "total_units": m,
        "prefix_ratio": round(outcome.k / m, 6),
        "is_sufficient": outcome.is_sufficient,
        "search": problem.search.name,
        "trace": problem.trace,
        "judge_calls": len(problem.trace),
    }
    if cfg.save_curve:
        out["curve"] = [round(p, 6) for p in (problem.curve or [])]
    if problem.fit < m and cfg.strategy.needs_judge:
        out["units_fit"] = problem.fit
        out["note"] = (
            f"bounded by the context: only prefixes of up to {problem.fit} of {m} units fit the "
            "judge prompt, so longer prefixes were not judged"
        )
    return out


def run_truncate(
    io: StageIO,
    backend: Backend | None,
    cfg: TruncateConfig,
    *,
    max_active: int = 64,
    reporter: ProgressSink | None = None,
) -> TruncateStats:
    """Search every pending record and write one output record each, in input order."""
    reporter = reporter or NullReporter()
    stats = TruncateStats()
    judge = make_judge(backend, cfg, stats)
    bound = ContextBound(backend, cfg)
    start = time.perf_counter()
    # The curve judge scores a whole problem when it is admitted, so a wide window would only
    # delay writing (and lose more to a crash); the other judges batch a probe per problem.
    window = 1 if isinstance(judge, CurveJudge) else max_active
    settle = judge.settle if judge is not None else None
    counts = backend.prompt_token_counts() if backend is not None else None
    for finished in schedule(problems(io, cfg, bound, judge, stats), judge, window, settle):
        records = [finish(p, cfg) for p in finished]
        io.write(records)
        for r in records:
            stats.problems += 1
            stats.ratio_sum += r["prefix_ratio"]
            stats.sufficient += bool(r["is_sufficient"])
            stats.bounded += "units_fit" in r
        rate = stats.judge_calls / max(time.perf_counter() - start, 1e-9)
        reporter.advance(len(records), rate=f"{rate:.1f} probes/s")
    if counts is not None:  # the engine's own count: every request it was sent, and its cache hits
        sent, cached = backend.prompt_token_counts() or counts
        stats.cot_tokens, stats.cache_hits = sent - counts[0], cached - counts[1]
    return stats


def reading(stats: TruncateStats) -> str:
    """Tokens read, against the floor's (one read of every full judge prompt)."""
    if not stats.tokens_read:
        return "tokens read not reported by the engine"
    read = stats.cot_tokens - stats.cache_hits
    against = f" ({read / stats.floor_tokens:.2f}x the floor's {stats.floor_tokens})" if stats.floor_tokens else ""
    hits = f", {stats.cache_hits} more found in the engine's prefix cache" if stats.cache_hits else ""
    probe = f" + {stats.probe_tokens} probe tokens" if stats.probe_tokens else ""
    return f"{stats.tokens_read} tokens read: {read} of judge prompts{against}{hits}{probe}"


def summary(stats: TruncateStats, io: StageIO) -> str:
    forwards = f", {stats.forwards} forwards" if stats.forwards else ""
    return (
        f"truncate: {stats.problems} problems, mean ratio {stats.mean_ratio:.3f}, "
        f"{stats.share_sufficient:.0%} sufficient, {stats.judge_calls} judge calls in "
        f"{stats.backend_calls} engine calls{forwards}, {reading(stats)}; {stats.bounded} bounded by the context, "
        f"{io.skipped} already done, {io.rejected} rejected"
    )
