"""OpenAI-compatible server backend (`vllm serve`, SGLang): the scale-out path.

Requests go out over one pooled httpx client from a thread pool of `max_concurrency`
workers, so at most that many are in flight; each is retried with exponential backoff and
jitter on 429, 5xx, timeouts and dropped connections, honouring Retry-After. We speak HTTP
ourselves instead of depending on the `openai` package: the vLLM extensions we need
(`top_k`, `repetition_penalty`, `return_token_ids`, `prompt_logprobs`, `/tokenize`) are
plain JSON fields, and one retry policy is easier to reason about than two stacked ones.

How each kind of prompt travels, so that the server sees the same tokens as hf and vllm:
- chat prompt, no prefill: POST /chat/completions (the server applies the chat template;
  `enable_thinking` goes in `chat_template_kwargs`);
- chat prompt with prefill: the template is rendered by the server (POST /tokenize, then
  /detokenize) and the prefill appended, then POST /completions with that text. This is the
  hf/vllm rendering exactly; `continue_final_message` would drop the generation prompt's
  own suffix (Qwen3's empty think block with `enable_thinking=False`);
- raw text: POST /completions with `add_special_tokens: false`, as hf encodes it.

Every sampling field (top_k, repetition_penalty, min_p included) is sent on every request:
`vllm serve` fills omitted ones from the model's generation_config.json, which would make the
server sample differently from hf and vllm. vLLM refuses n>1 with temperature 0, so greedy
requests ask for one sample and copy it n times (greedy samples are identical anyway).

Token counts: vLLM returns each choice's token ids with `return_token_ids`, which gives an
exact count per sample even for n>1 (usage is per request). Servers without that field get
`usage.completion_tokens` split evenly across the n choices, an approximation when n>1.

Scoring needs vLLM's extensions (/tokenize and `prompt_logprobs`); other servers get a
BackendError that says so. Run the server without `--reasoning-parser`, so the text is the
model's raw output as with the other engines.

The API key (OPENAI_API_KEY) lives only in the client's Authorization header (httpx masks
it in reprs); error messages are scrubbed of it as a second guard. It is never part of a
stage config.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any, TypeVar

from palign_cli.backends.base import (
    Backend,
    BackendOptions,
    Prompt,
    Sample,
    SamplingParams,
)
from palign_cli.errors import BackendError, BackendUnavailable

log = logging.getLogger("palign")

T = TypeVar("T")
R = TypeVar("R")

NEEDS_VLLM = "needs vLLM's /tokenize, /detokenize and prompt_logprobs extensions (run the server with vllm serve)"


class HTTPStatusError(BackendError):
    """A non-retryable answer (4xx other than 429): the request itself is wrong."""

    def __init__(self, message: str, status: int, detail: str):
        super().__init__(message)
        self.status, self.detail = status, detail


def normalize_base_url(url: str) -> str:
    """`http://host:port` gets the conventional `/v1`; a trailing slash is dropped."""
    import httpx

    url = url.strip().rstrip("/")
    if httpx.URL(url).path in ("", "/"):
        url += "/v1"
    return url


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def split_tokens(total: int, n: int) -> list[int]:
    """`total` tokens shared by n choices as evenly as integers allow (first ones get the rest)."""
    base, rest = divmod(total, n)
    return [base + (1 if i < rest else 0) for i in range(n)]


def _server_message(response: Any) -> str:
    """The error text a server put in its body (OpenAI's {"error": {"message"}} or plain)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    err = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(err, dict):
        err = err.get("message") or err.get("detail") or err
    return " ".join(str(err).split())[:300]


class OpenAIBackend(Backend):
    name = "openai"
    probe_timeout = 5.0  # seconds for GET /models at start
    probe_attempts = 3
    max_retry_wait = 120.0  # a Retry-After longer than this is capped

    def __init__(
        self,
        options: BackendOptions,
        *,
        api_key: str | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        import httpx

        self._httpx = httpx
        url = options.base_url or os.environ.get("OPENAI_BASE_URL")
        if not url:
            raise BackendUnavailable(
                "--backend openai needs the server's URL: --base-url or OPENAI_BASE_URL (e.g. http://127.0.0.1:8000/v1)"
            )
        self.base_url = normalize_base_url(url)
        self.root = self.base_url.removesuffix("/v1")  # vLLM serves /tokenize at the root
        self.model = options.model
        self.max_retries = max(0, options.max_retries)
        self.backoff, self.max_backoff = backoff, max_backoff
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self._secret = key or None
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        workers = max(1, options.max_concurrency)
        self.client = httpx.Client(
            headers=headers,
            timeout=options.request_timeout,
            limits=httpx.Limits(max_connections=workers, max_keepalive_connections=workers),
        )
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="palign-openai")
        try:
            self.max_len = self._probe()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    # ----- start-up ---------------------------------------------------------------------

    def _probe(self) -> int | None:
        """GET /models once (a few quick tries): reachable, key accepted, model served."""
        url = f"{self.base_url}/models"
        problem = ""
        for attempt in range(self.probe_attempts):
            if attempt:
                time.sleep(0.5 * 2 ** (attempt - 1))
            try:
                response = self.client.get(url, timeout=self.probe_timeout)
            except self._httpx.HTTPError as exc:
                problem = self._describe(exc)
                continue
            status = response.status_code
            if status in (401, 403):
                raise BackendUnavailable(
                    f"--backend openai: {url} refused the API key (HTTP {status}); check OPENAI_API_KEY"
                )
            if status == 429 or status >= 500:
                problem = f"HTTP {status}"
                continue
            if status != 200:
                raise BackendUnavailable(
                    f"--backend openai: GET {url} answered HTTP {status}; check that --base-url "
                    "points at an OpenAI-compatible API (usually ending in /v1)"
                )
            return self._served_len(url, response)
        raise BackendUnavailable(
            f"--backend openai: cannot reach {url} ({problem}); check that the server is running "
            "and that --base-url / OPENAI_BASE_URL names it"
        )

    def _served_len(self, url: str, response: Any) -> int | None:
        try:
            served = {m["id"]: m for m in response.json()["data"]}
        except (ValueError, KeyError, TypeError):
            raise BackendUnavailable(
                f"--backend openai: GET {url} did not return a model list"
            ) from None
        if self.model not in served:
            raise BackendUnavailable(
                f"--backend openai: model {self.model!r} is not served at {self.base_url}; "
                f"it serves {sorted(served)}: pass one of them as --model"
            )
        max_len = served[self.model].get("max_model_len")
        return int(max_len) if max_len else None

    def context_length(self) -> int | None:
        return self.max_len

    # ----- HTTP with retries ------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _describe(self, exc: Exception) -> str:
        return self._scrub(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter in [d/2, d]; a server's Retry-After is a floor."""
        d = min(self.max_backoff, self.backoff * 2**attempt)
        d = random.uniform(d / 2, d)
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_retry_wait))
        return d

    def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON, retrying transient failures; BackendError once retries are spent."""
        httpx = self._httpx
        transient = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
        attempt = 0
        while True:
            retry_after = None
            try:
                response = self.client.post(url, json=body)
            except transient as exc:
                problem = self._describe(exc)
            else:
                status = response.status_code
                if status == 200:
                    return self._json(url, response)
                detail = self._scrub(_server_message(response))
                problem = f"HTTP {status}: {detail}"
                if status != 429 and status < 500:
                    raise HTTPStatusError(
                        f"--backend openai: POST {url}: {problem}", status, detail
                    )
                retry_after = retry_after_seconds(response.headers.get("retry-after"))
            if attempt >= self.max_retries:
                raise BackendError(
                    f"--backend openai: POST {url} failed after {attempt + 1} attempts; last: {problem}"
                )
            delay = self._delay(attempt, retry_after)
            log.warning(
                "openai: POST %s: %s; retry %d/%d in %.1f s",
                url,
                problem,
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
            attempt += 1

    def _json(self, url: str, response: Any) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise BackendError(
                f"--backend openai: POST {url} returned a body that is not JSON"
            ) from None
        if not isinstance(data, dict):
            raise BackendError(f"--backend openai: POST {url} returned unexpected JSON")
        return data

    def _extension(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """POST to a vLLM-only endpoint; a server without it gets an error naming the need."""
        try:
            return self._post(f"{self.root}{path}", body)
        except HTTPStatusError as exc:
            if exc.status in (404, 405):
                raise BackendError(
                    f"--backend openai: {what} {NEEDS_VLLM}; {self.root}{path} answered HTTP {exc.status}"
                ) from None
            raise

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """fn over items on the pool, results in order; the first failure cancels the rest."""
        futures = [self.pool.submit(fn, item) for item in items]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for f in pending:
            f.cancel()
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is not None:
                raise f.exception()
        return [f.result() for f in futures]

    # ----- generation -------------------------------------------------------------------

    def _generate(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]) -> list[list[Sample]]:
        return self._map(
            lambda job: self._generate_one(*job), list(zip(prompts, params, strict=True))
        )

    def _sampling_body(self, p: SamplingParams) -> dict[str, Any]:
        """vLLM's names, every sampling field always sent.

        `vllm serve` fills any field a request leaves out from the model's
        generation_config.json (Qwen's ship top_k 20, repetition_penalty 1.05), so leaving
        top_k or repetition_penalty out would silently sample differently from hf and vllm.
        """
        max_tokens = min(p.max_tokens, self.max_len) if self.max_len else p.max_tokens
        body: dict[str, Any] = {
            "model": self.model,
            "n": p.n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "top_k": p.top_k if p.top_k and p.top_k > 0 else -1,
            "min_p": 0.0,
            "repetition_penalty": p.repetition_penalty,
            "max_tokens": max_tokens,
            "return_token_ids": True,
        }
        if p.stop:
            body["stop"] = list(p.stop)
        if p.seed is not None:
            body["seed"] = p.seed
        return body

    def _generate_one(self, prompt: Prompt, p: SamplingParams) -> list[Sample]:
        if p.temperature <= 0 and p.n > 1:
            # vLLM refuses n>1 with greedy sampling; greedy samples are all alike: ask once, copy.
            one = self._generate_one(prompt, replace(p, n=1))[0]
            return [replace(one) for _ in range(p.n)]
        body = self._sampling_body(p)
        chat = prompt.raw is None and not prompt.prefill
        if chat:
            body["messages"] = prompt.chat()
            if prompt.enable_thinking is not None:
                body["chat_template_kwargs"] = {"enable_thinking": prompt.enable_thinking}
            url = f"{self.base_url}/chat/completions"
        else:
            body["prompt"] = self._render(prompt)
            body["add_special_tokens"] = False  # the rendered text already holds its specials
            url = f"{self.base_url}/completions"
        try:
            data = self._post(url, body)
        except HTTPStatusError as exc:
            if exc.status == 400 and "context length" in exc.detail:
                # As hf and vllm do: a prompt with no room left yields empty "length" samples.
                return [Sample(text="", finish_reason="length", tokens=0) for _ in range(p.n)]
            raise
        return self._samples(data, p.n, chat)

    def _samples(self, data: dict[str, Any], n: int, chat: bool) -> list[Sample]:
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise BackendError(
                f"--backend openai: asked for {n} samples, the server returned {len(choices)}"
            )
        usage = data.get("usage") or {}
        shares = split_tokens(int(usage.get("completion_tokens") or 0), n)
        samples = []
        for choice, share in zip(choices, shares, strict=True):
            text = (choice.get("message") or {}).get("content") if chat else choice.get("text")
            ids = choice.get("token_ids")
            reason = choice.get("finish_reason")
            if reason == "abort":
                raise BackendError("--backend openai: the server aborted a request (see its log)")
            samples.append(
                Sample(
                    text=text or "",
                    finish_reason="length" if reason == "length" else "stop",
                    tokens=len(ids) if ids is not None else share,
                )
            )
        return samples

    # ----- rendering and tokens through the server --------------------------------------

    def _render(self, prompt: Prompt) -> str:
        """The full text the model reads before it writes, as ChatRenderer.render gives it."""
        if prompt.raw is not None:
            return prompt.raw + prompt.prefill
        body: dict[str, Any] = {
            "model": self.model,
            "messages": prompt.chat(),
            "add_generation_prompt": True,
        }
        if prompt.enable_thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": prompt.enable_thinking}
        ids = self._extension("/tokenize", body, "a prefill or a score")["tokens"]
        text = self._extension(
            "/detokenize", {"model": self.model, "tokens": ids}, "a prefill or a score"
        )["prompt"]
        return text + prompt.prefill

    def _tokenize(self, text: str) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        return list(self._extension("/tokenize", body, "scoring")["tokens"])

    # ----- scoring ----------------------------------------------------------------------

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        heads = self._map(self._render_ids, prompts)
        jobs = [(head, cand) for head in heads for cand in candidates]
        flat = self._map(lambda job: self._score_one(*job), jobs)
        k = len(candidates)
        return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]

    def _render_ids(self, prompt: Prompt) -> tuple[str, list[int]]:
        text = self._render(prompt)
        return text, self._tokenize(text)

    def _score_one(self, head: tuple[str, list[int]], reply: str) -> float:
        """Summed log P(reply tokens | prompt), split as ChatRenderer.encode_with_reply does."""
        text, prompt_ids = head
        full = self._tokenize(text + reply)
        reply_ids = (
            full[len(prompt_ids) :]
            if full[: len(prompt_ids)] == prompt_ids
            else self._tokenize(reply)
        )
        if not reply_ids:
            return 0.0
        body = {
            "model": self.model,
            "prompt": prompt_ids + reply_ids,
            "max_tokens": 1,
            "temperature": 0.0,
            "prompt_logprobs": 0,  # the logprob of each prompt token itself
        }
        data = self._post(f"{self.base_url}/completions", body)
        plp = (data.get("choices") or [{}])[0].get("prompt_logprobs") or data.get("prompt_logprobs")
        if not plp:
            raise BackendError(
                f"--backend openai: scoring {NEEDS_VLLM}; the server returned no prompt_logprobs"
            )
        start = len(prompt_ids)
        return sum(float(plp[start + j][str(tok)]["logprob"]) for j, tok in enumerate(reply_ids))

    def close(self) -> None:
        pool, client = getattr(self, "pool", None), getattr(self, "client", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()
