"""Probes on a cached prefix (hf): same tokens, scores and replies as each probe on its own prompt.

Real CoTs, the real transformers backend on the tiny model (float32). Probes of several problems
go into each round in the order a binary search would ask them (the middle first, then above
and below), so caches are read lazily, extended, trimmed and batched with padding.
"""

from __future__ import annotations

import copy
import json

import pytest
from conftest import data_file

from palign_cli.backends.base import CUT, Capabilities, SamplingParams, probe_prompt
from palign_cli.prompts import ENOUGH, NOT_ENOUGH
from palign_cli.records import StageIO
from palign_cli.stages.truncate import TruncateConfig, judge_prompt_for, run_truncate
from palign_cli.units import split_units

CANDIDATES = [ENOUGH, NOT_ENOUGH]
CFG = TruncateConfig(model="tiny", backend="hf")


def records() -> list[dict]:
    with open(data_file("teacher_cots_sample.jsonl"), encoding="utf-8") as f:
        recs = [json.loads(line) for line in f]
    return sorted(recs, key=lambda r: len(r["long_cot"]))


def head_for(rec: dict):
    return judge_prompt_for(rec["question"], CUT, CFG)


def rounds(engine, recs: list[dict]) -> list[list[tuple]]:
    """Per round, one probe (session, cut, prompt) per problem: k = m/2, m/4, 3m/4, 1, m."""
    problems = []
    for rec in recs:
        units = split_units(rec["long_cot"])
        problems.append((engine.open_session(head_for(rec), units.text), units, head_for(rec)))
    out = []
    for frac in (0.5, 0.25, 0.75, 0.0, 1.0):
        batch = []
        for session, units, head in problems:
            k = min(len(units), max(1, round(frac * len(units))))
            cut = units.end(k)
            batch.append((session, cut, probe_prompt(head, units.text[:cut])))
        out.append(batch)
    return out


@pytest.fixture(params=["in-place", "padded"])
def layout(request, monkeypatch):
    """in-place: rows attend to their own caches (the CPU path); padded: the caches copied into
    one padded batch (the GPU path), forced here so that CPU tests cover it too."""
    from palign_cli.backends import hf_probe

    if request.param == "padded":
        monkeypatch.setattr(hf_probe, "in_place", lambda backend: False)
    return request.param


def close(a, b, tol=1e-4):
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=tol), (a, b)


def test_probe_tokens_equal_each_probes_own_tokenization(hf_engine):
    renderer = hf_engine.renderer
    for rec in records()[::4]:
        units = split_units(rec["long_cot"])
        session = hf_engine.open_session(head_for(rec), units.text)
        for k in range(1, len(units) + 1, 3):
            cut = session.cut(units.end(k), CANDIDATES)
            probe = probe_prompt(head_for(rec), units.text[: units.end(k)])
            for c, cand in enumerate(CANDIDATES):
                prompt_ids, reply_ids = renderer.encode_with_reply(probe, cand)
                assert session.shared[: cut.split] + cut.tail == prompt_ids
                assert cut.replies[c] == reply_ids


def test_scores_equal_per_probe_scoring_on_real_cots(hf_engine, layout):
    recs = records()[:3] + records()[20:22]
    for batch in rounds(hf_engine, recs):
        got, cost = hf_engine.score_probes([(s, c) for s, c, _ in batch], CANDIDATES)
        ref = hf_engine.score([p for _, _, p in batch], CANDIDATES)
        assert cost.probe_tokens > 0 and cost.forwards >= 1
        for a, b in zip(got, ref, strict=True):
            close(a, b)


def test_the_cache_is_read_lazily_and_at_most_once(hf_engine):
    rec = records()[10]
    units = split_units(rec["long_cot"])
    session = hf_engine.open_session(head_for(rec), units.text)
    middle = units.end(len(units) // 2)
    _, first = hf_engine.score_probes([(session, middle)], CANDIDATES)
    assert first.cot_tokens == session.cached == session.cut(middle).split
    assert session.cached < 0.6 * len(session.shared)  # the second half was never read
    _, lower = hf_engine.score_probes([(session, units.end(len(units) // 4))], CANDIDATES)
    assert lower.cot_tokens == 0  # below the cache: nothing new to read
    _, upper = hf_engine.score_probes([(session, units.end(len(units)))], CANDIDATES)
    assert first.cot_tokens + upper.cot_tokens == session.cached <= len(session.shared)


def test_a_trimmed_cache_scores_the_same(hf_engine):
    rec = records()[6]
    units = split_units(rec["long_cot"])
    session = hf_engine.open_session(head_for(rec), units.text)
    cuts = [units.end(len(units)), units.end(len(units) // 3)]
    before, _ = hf_engine.score_probes([(session, cuts[1])], CANDIDATES)
    hf_engine.score_probes([(session, cuts[0])], CANDIDATES)
    full = session.cached
    session.trim_to_cut(cuts[1])
    assert session.cached < full
    after, cost = hf_engine.score_probes([(session, cuts[1])], CANDIDATES)
    assert cost.cot_tokens == 0
    close(before[0], after[0], tol=1e-5)


def test_a_small_token_budget_splits_the_round_and_changes_nothing(tiny_model, hf_engine):
    from palign_cli.backends import BackendOptions, make_backend

    small = make_backend("hf", BackendOptions(model=tiny_model, dtype="float32", token_budget=256))
    recs = records()[:3]
    for wide, narrow in zip(rounds(hf_engine, recs)[:2], rounds(small, recs)[:2], strict=True):
        a, cost_a = hf_engine.score_probes([(s, c) for s, c, _ in wide], CANDIDATES)
        b, cost_b = small.score_probes([(s, c) for s, c, _ in narrow], CANDIDATES)
        assert cost_b.forwards > cost_a.forwards
        for x, y in zip(a, b, strict=True):
            close(x, y)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.0, max_tokens=6),
        SamplingParams(temperature=0.8, top_p=0.9, top_k=50, repetition_penalty=1.1, max_tokens=6, seed=7),
    ],
    ids=["greedy", "seeded-sampling"],
)
def test_replies_equal_generate_on_each_probes_own_prompt(hf_engine, params, layout):
    recs = records()[:2] + records()[15:17]
    for batch in rounds(hf_engine, recs):
        asked = [params.with_seed(None if params.seed is None else params.seed + i) for i in range(len(batch))]
        got, cost = hf_engine.generate_probes([(s, c) for s, c, _ in batch], asked)
        ref = hf_engine.generate([p for _, _, p in batch], asked)
        assert [(g.text, g.finish_reason, g.tokens) for g in got] == [
            (r[0].text, r[0].finish_reason, r[0].tokens) for r in ref
        ]
        assert cost.probe_tokens > 0


def test_rows_that_stop_early_drop_out_of_the_batch(hf_engine, layout):
    """A stop string that one row's greedy reply hits early: that row stops, the others go on."""
    batch = rounds(hf_engine, records()[:4])[0]
    pairs, prompts = [(s, c) for s, c, _ in batch], [p for _, _, p in batch]
    free = hf_engine.generate_probes(pairs, [SamplingParams(temperature=0.0, max_tokens=8)] * len(pairs))[0]
    stop = free[0].text[1:3]
    assert stop and all(stop not in s.text for s in free[1:]), "pick another stop string"
    params = [SamplingParams(temperature=0.0, max_tokens=8, stop=(stop,))] * len(pairs)
    got, _ = hf_engine.generate_probes(pairs, params)
    ref = hf_engine.generate(prompts, params)
    assert got[0].finish_reason == "stop" and got[0].tokens < 8
    assert [(g.text, g.finish_reason) for g in got] == [(r[0].text, r[0].finish_reason) for r in ref]


def plain(engine):
    """The same engine, declared unable to probe on a cached prefix: each probe's whole prompt."""
    other = copy.copy(engine)
    other.capabilities = Capabilities(count_tokens=True, curve_in_one_pass=False)
    return other


def stage(engine, recs, tmp_path, name, **cfg):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({k: r[k] for k in ("id", "question", "long_cot")}) + "\n" for r in recs))
    config = TruncateConfig.make(model="tiny", backend="hf", **cfg)
    out = tmp_path / f"{name}.jsonl"
    with StageIO(str(inp), str(out), stage="truncate", config=config.fingerprint(),
                 required={"question": ("question",), "cot": ("long_cot",)}) as io:
        stats = run_truncate(io, engine, config, max_active=3)
    return stats, [json.loads(x) for x in out.read_text().splitlines()]


@pytest.mark.parametrize("judge", ["generate", "logprob"])
def test_stage_decisions_equal_the_plain_path(hf_engine, tmp_path, judge):
    recs = records()[:4]
    cached_stats, cached = stage(hf_engine, recs, tmp_path, "cached", judge=judge, max_tokens=4)
    plain_stats, reread = stage(plain(hf_engine), recs, tmp_path, "plain", judge=judge, max_tokens=4)
    assert cached_stats.forwards > 0 and plain_stats.forwards == 0
    for a, b in zip(cached, reread, strict=True):
        assert [(e["k"], e["verdict"]) for e in a["trace"]] == [(e["k"], e["verdict"]) for e in b["trace"]]
        assert a["prefix_units"] == b["prefix_units"] and a["is_sufficient"] == b["is_sufficient"]
        if judge == "generate":
            assert [e["reply"] for e in a["trace"]] == [e["reply"] for e in b["trace"]]
        else:
            close([e["p_enough"] for e in a["trace"]], [e["p_enough"] for e in b["trace"]], tol=1e-4)
    # each CoT read at most once on the cache; the plain path re-reads a prompt per probe
    assert cached_stats.cot_tokens <= cached_stats.floor_tokens < plain_stats.cot_tokens


def test_a_first_probe_that_is_enough_never_reads_the_second_half(hf_engine, tmp_path):
    recs = records()[8:12]
    stats, out = stage(hf_engine, recs, tmp_path, "enough", judge="logprob", threshold=0.0)
    assert all(r["trace"][0]["verdict"] == "ENOUGH" for r in out)
    first = 0  # tokens of each problem's first probe (the middle): nothing after it is read
    for rec, r in zip(recs, out, strict=True):
        units = split_units(rec["long_cot"])
        first += hf_engine.count_tokens(probe_prompt(head_for(rec), units.prefix(r["trace"][0]["k"])))
    assert stats.cot_tokens <= first < 0.75 * stats.floor_tokens


@pytest.mark.slow
def test_vllm_scores_on_its_prefix_cache_equal_hf(vllm_engine, hf_engine):
    """Forced one-token requests report the raw log-probability, and they hit the prefix cache."""
    recs = records()[:2] + records()[18:19]
    for batch in rounds(hf_engine, recs)[:3]:
        ref, _ = hf_engine.score_probes([(s, c) for s, c, _ in batch], CANDIDATES)
        sent, cached = vllm_engine.prompt_tokens, vllm_engine.cached_tokens
        got = vllm_engine.score([p for _, _, p in batch], CANDIDATES)
        for a, b in zip(got, ref, strict=True):
            close(a, b, tol=1e-4)
        # every continuation request finds its prompt cached; only the first token's are new
        assert vllm_engine.cached_tokens - cached > 0.6 * (vllm_engine.prompt_tokens - sent)


def test_a_probe_near_the_search_reach_reads_on_to_it(hf_engine):
    """Read-ahead: once what is left to the reach is small beside what the probe needs."""
    from palign_cli.backends.hf_probe import READ_AHEAD

    rec = records()[12]
    units = split_units(rec["long_cot"])
    session = hf_engine.open_session(head_for(rec), units.text)
    session.reach = units.end(len(units))
    far = session.cut(session.reach).split
    hf_engine.score_probes([(session, units.end(len(units) // 2))], CANDIDATES)
    assert session.cached < far  # half-way: too far from the reach to read ahead
    near = max(k for k in range(1, len(units)) if far <= (1 + READ_AHEAD) * session.cut(units.end(k)).split)
    got, cost = hf_engine.score_probes([(session, units.end(near))], CANDIDATES)
    assert session.cached == far and cost.cot_tokens == far - session.cut(units.end(len(units) // 2)).split
    ref = hf_engine.score([probe_prompt(head_for(rec), units.text[: units.end(near)])], CANDIDATES)
    close(got[0], ref[0])
