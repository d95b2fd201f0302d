"""The one-pass sufficiency curve: same tokens and same scores as scoring each probe alone."""

from __future__ import annotations

import json

import pytest
from conftest import data_file

from palign_cli.backends.base import CUT, Backend, probe_prompt
from palign_cli.backends.hf_cuts import plan_cuts, score_cuts_onepass
from palign_cli.backends.template import ChatRenderer
from palign_cli.prompts import ENOUGH, NOT_ENOUGH
from palign_cli.stages.truncate import TruncateConfig, judge_prompt_for
from palign_cli.units import split_units

CANDIDATES = [ENOUGH, NOT_ENOUGH]
CFG = TruncateConfig(model="tiny", backend="hf")
# Qwen2's pre-tokenizer regex: punctuation runs swallow following newlines (".\n" is one
# pre-token), so the judge prompt's suffix merges with the last characters before a cut.
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def records() -> list[dict]:
    with open(data_file("teacher_cots_sample.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def by_length() -> list[dict]:
    return sorted(records(), key=lambda r: len(r["long_cot"]))


def head_for(rec: dict):
    return judge_prompt_for(rec["question"], CUT, CFG)


def assert_tokens_match(renderer, rec: dict, unit: str, every: int = 1, replies_every: int = 1) -> int:
    """The plan's tokens for each probe == tokenizing that probe's full prompt on its own.

    Prompts are checked at every chosen cut (batch-encoded: it is the slow part), candidate
    replies (`encode_with_reply`) at every `replies_every`-th one.
    """
    units = split_units(rec["long_cot"], unit)
    cuts = list(units.ends)[::every]
    head = head_for(rec)
    plan = plan_cuts(renderer, head, units.text, cuts, CANDIDATES)
    probes = [probe_prompt(head, units.text[:cut]) for cut in cuts]
    rendered = [renderer.render(p) for p in probes]
    encoded = renderer.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    for j, (cut, prompt_ids) in enumerate(zip(cuts, encoded, strict=True)):
        assert plan.shared[: plan.cuts[j].split] + plan.cuts[j].tail == prompt_ids, (unit, units.text[cut - 20:cut])
        if j % replies_every == 0 or j == len(cuts) - 1:
            for c, cand in enumerate(CANDIDATES):
                assert plan.probe_ids(j, c) == sum(renderer.encode_with_reply(probes[j], cand), [])
    return len(cuts)


def test_probe_tokens_equal_each_probes_own_tokenization(hf_engine):
    """Every other sentence boundary of the 40 real CoTs, with the tiny model's byte-level BPE."""
    n = sum(assert_tokens_match(hf_engine.renderer, rec, "sentence", every=2, replies_every=10) for rec in records())
    assert n > 3000


def qwen_style_renderer(texts: list[str], pattern: str | None = QWEN_PATTERN, metaspace: bool = False):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from palign_cli.tiny_model import CHAT_TEMPLATE, SPECIAL_TOKENS

    tok = Tokenizer(models.BPE())
    if metaspace:  # SentencePiece-like: a word-initial marker makes mid-text re-tokenizing unsafe
        tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
        alphabet = []
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    return ChatRenderer(fast)


def test_probe_tokens_with_a_qwen_style_pretokenizer():
    recs = records()
    renderer = qwen_style_renderer([r["long_cot"] for r in recs])
    merged = 0
    for rec in recs[:6]:
        for unit in ("sentence", "line"):
            assert_tokens_match(renderer, rec, unit, replies_every=10)
        # the cuts here do merge across the boundary: the re-tokenized tail is what makes them right
        units = split_units(rec["long_cot"], "line")
        full = renderer.encode(renderer.render(probe_prompt(head_for(rec), units.text)))
        for cut in units.ends[:-1]:
            probe = renderer.encode(renderer.render(probe_prompt(head_for(rec), units.text[:cut])))
            merged += probe[: len(probe) - 1] != full[: len(probe) - 1]
    assert merged > 0


def test_probe_tokens_with_a_metaspace_tokenizer_fall_back_exactly():
    recs = by_length()[:2]
    renderer = qwen_style_renderer([r["long_cot"] for r in records()], metaspace=True)
    for rec in recs:
        assert_tokens_match(renderer, rec, "sentence", every=3)


def per_probe(backend, rec, cuts):
    return Backend.score_cuts(backend, head_for(rec), rec["long_cot"], cuts, CANDIDATES)


def close(a, b, tol=1e-4):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=tol), (x, y)


def cuts_of(rec, every=1):
    return list(split_units(rec["long_cot"]).ends)[::every]


def test_onepass_equals_per_probe_scoring_on_real_cots(hf_engine):
    """float32 on the tiny model: every boundary of the 2 shortest CoTs, every 12th of a longer one."""
    chosen = [(r, 1) for r in by_length()[:2]] + [(by_length()[20], 12)]
    for rec, every in chosen:
        cuts = cuts_of(rec, every)
        one = score_cuts_onepass(hf_engine, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
        ref = per_probe(hf_engine, rec, cuts)
        assert one.cuts_scored == len(cuts) and one.tokens_read > 0
        for a, b in zip(one.logprobs, ref.logprobs, strict=True):
            close(a, b)


def test_hf_backend_uses_the_onepass_path(hf_engine):
    rec = by_length()[0]
    cuts = cuts_of(rec)
    via_backend = hf_engine.score_cuts(head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    assert via_backend.tokens_read > 0  # the base class's per-probe path reports none
    direct = score_cuts_onepass(hf_engine, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    assert via_backend.logprobs == direct.logprobs


def test_small_groups_give_the_same_curve(hf_engine, monkeypatch):
    """One tail group per cut (each against its own view of the cache) changes nothing."""
    from palign_cli.backends import hf_cuts

    rec = by_length()[5]
    cuts = cuts_of(rec, 2)
    a = score_cuts_onepass(hf_engine, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    monkeypatch.setattr(hf_cuts, "TAIL_TOKENS", 1)
    plan = plan_cuts(hf_engine.renderer, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    assert len(hf_cuts._tail_groups(plan, list(range(len(cuts))), hf_cuts._tail_budget(hf_engine))) == len(cuts)
    b = score_cuts_onepass(hf_engine, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    for x, y in zip(a.logprobs, b.logprobs, strict=True):
        close(x, y)


def test_cuts_beyond_the_context_are_dropped(tiny_model, hf_engine):
    from palign_cli.backends import BackendOptions, make_backend

    bounded = make_backend("hf", BackendOptions(model=tiny_model, dtype="float32", max_model_len=900))
    rec = by_length()[2]
    cuts = cuts_of(rec)
    scored = score_cuts_onepass(bounded, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    assert 0 < scored.cuts_scored < len(cuts)
    assert len(scored.logprobs) == scored.cuts_scored
    plan = plan_cuts(bounded.renderer, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    for j in range(len(cuts)):
        longest = max(len(plan.probe_ids(j, c)) for c in range(2))
        assert (longest <= 900) is (j < scored.cuts_scored)
    full = score_cuts_onepass(hf_engine, head_for(rec), rec["long_cot"], cuts[: scored.cuts_scored], CANDIDATES)
    for x, y in zip(scored.logprobs, full.logprobs, strict=True):
        close(x, y)


def test_head_without_a_single_placeholder_falls_back_to_per_probe(hf_engine):
    rec = by_length()[0]
    head = judge_prompt_for("What is {cut}?", CUT, CFG)  # the placeholder twice
    cuts = cuts_of(rec)[:4]
    got = score_cuts_onepass(hf_engine, head, rec["long_cot"], cuts, CANDIDATES)
    ref = Backend.score_cuts(hf_engine, head, rec["long_cot"], cuts, CANDIDATES)
    assert got.logprobs == ref.logprobs


@pytest.mark.slow
def test_vllm_per_probe_scores_match_hf_onepass(vllm_engine, hf_engine):
    """vLLM scores each probe (prefix caching shares the CoT); hf reads it once."""
    rec = by_length()[0]
    cuts = cuts_of(rec)
    got = vllm_engine.score_cuts(head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    one = score_cuts_onepass(hf_engine, head_for(rec), rec["long_cot"], cuts, CANDIDATES)
    assert got.cuts_scored == one.cuts_scored == len(cuts)
    for x, y in zip(got.logprobs, one.logprobs, strict=True):
        close(x, y, tol=1e-2)
