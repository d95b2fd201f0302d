"""OpenAI-compatible server backend (`vllm serve`, SGLang): the scale-out path.

Requests go out through the official `openai` client in its async form, on an event loop
the backend owns (backends/aio.py): the requests of one `generate` or `score` call run
concurrently, at most `max_concurrency` in flight. Ctrl-C cancels them at once, and the
first fatal answer (401, 400, ...) cancels the rest before anything more is sent or logged.

What comes from the client: the connection pool, timeouts (`request_timeout`, with a short
connect timeout), the Authorization header, its error classes, and the quick retries of the
start-up probe. What palign keeps: the retry loop of the requests themselves, so that each
retry says on stderr what failed and how many are left (the client retries silently, and its
hooks into that loop are private), and so that its budget grows with `max_retries`:
exponential backoff from 0.5 s, capped at 10 s per wait (less up to a quarter of jitter), so
the default 6 retries wait 20-25 s and each further one 7.5-10 s: `max_retries=40` waits
4.5-6 minutes, enough for `vllm serve` to reload a 7B model.
429, 408, 5xx, timeouts and dropped connections are retried, honouring Retry-After.

How each kind of prompt travels, so that the server sees the same tokens as hf and vllm:
- chat prompt, no prefill: POST /chat/completions (the server applies the chat template;
  `enable_thinking` goes in `chat_template_kwargs`);
- chat prompt with prefill: the template is rendered by the server (POST /tokenize, then
  /detokenize) and the prefill appended, then POST /completions with that text. This is the
  hf/vllm rendering exactly; `continue_final_message` would drop the generation prompt's
  own suffix (Qwen3's empty think block with `enable_thinking=False`);
- raw text: POST /completions with `add_special_tokens: false`, as hf encodes it.
The vLLM fields (top_k, repetition_penalty, return_token_ids, prompt_logprobs, /tokenize)
are plain JSON, so every request is a `client.post` of one JSON body.

Every sampling field (top_k, repetition_penalty, min_p included) is sent on every request:
`vllm serve` fills omitted ones from the model's generation_config.json, which would make the
server sample differently from hf and vllm. vLLM refuses n>1 with temperature 0; greedy
requests arrive here asking for one sample (Backend.generate copies it n times).

A prompt that does not fit the context gives empty samples with finish_reason
"prompt_too_long" (not "length": nothing was cut by --max-tokens). A server that refuses
prompt + max_tokens while the prompt itself fits is asked again with the room it has left.

Token counts: vLLM returns each choice's token ids with `return_token_ids`, which gives an
exact count per sample even for n>1 (usage is per request). Servers without that field get
`usage.completion_tokens` split evenly across the n choices, an approximation when n>1.

Scoring needs vLLM's extensions (/tokenize and `prompt_logprobs`); other servers get a
BackendError that says so. Run the server without `--reasoning-parser`, so the text is the
model's raw output as with the other engines.

The API key (OPENAI_API_KEY) lives only inside the client, which sends it as a header;
error messages are scrubbed of it. It is never logged, printed or part of a stage config.
A server without a key gets the conventional placeholder "EMPTY" (the client insists on one).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from palign_cli.backends.aio import CANCEL_GRACE, LoopRunner, bounded_map
from palign_cli.backends.base import (
    PROMPT_TOO_LONG,
    Backend,
    BackendOptions,
    Prompt,
    Sample,
    SamplingParams,
)
from palign_cli.errors import BackendError, BackendUnavailable

log = logging.getLogger("palign")

NEEDS_VLLM = "needs vLLM's /tokenize, /detokenize and prompt_logprobs extensions (run the server with vllm serve)"
NEEDS_CLIENT = "--backend openai needs the openai client: pip install 'palign[openai]'"
KEY_REFUSED = "refused the API key (HTTP {status}); check OPENAI_API_KEY"


class HTTPStatusError(BackendError):
    """A non-retryable answer (4xx other than 408/429): the request itself is wrong."""

    def __init__(self, message: str, status: int, detail: str):
        super().__init__(message)
        self.status, self.detail = status, detail


def normalize_base_url(url: str) -> str:
    """`http://host:port` gets the conventional `/v1`; a trailing slash is dropped."""
    url = url.strip().rstrip("/")
    if urlsplit(url).path in ("", "/"):
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


def retryable(status: int) -> bool:
    """Answers worth asking again: overload, rate limits, a server restarting or failing."""
    return status in (408, 429) or status >= 500


_CONTEXT = re.compile(r"maximum context length (?:is |of )?(\d+)")
_PROMPT_USED = re.compile(r"(\d+) (?:tokens )?in the (?:messages|prompt)")


def context_room(detail: str) -> int | None:
    """Tokens left for the reply, read from a server's context-length refusal.

    None: the refusal is about something else. 0: the prompt alone does not fit (vLLM says
    so since 0.11, and clamps max_tokens itself). Older servers refuse prompt + max_tokens
    and state both ("... 2048 tokens. However, you requested 2300 tokens (1900 in the
    messages, 400 in the completion)"): the room is what the prompt leaves.
    """
    if "context length" not in detail:
        return None
    context, used = _CONTEXT.search(detail), _PROMPT_USED.search(detail)
    if context and used:
        return max(0, int(context[1]) - int(used[1]))
    return 0


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


class Scrubber:
    """Replaces the API key in text meant for people; its repr never shows the key."""

    def __init__(self, secret: str | None):
        self._secret = secret or None

    def __call__(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def __repr__(self) -> str:
        return "Scrubber(***)"


def _too_long(n: int) -> list[Sample]:
    return [Sample(text="", finish_reason=PROMPT_TOO_LONG, tokens=0) for _ in range(n)]


class OpenAIBackend(Backend):
    name = "openai"
    probe_timeout = 5.0  # seconds for GET /models at start
    probe_attempts = 3
    connect_timeout = 5.0  # a host that does not answer at all fails fast and is retried
    max_retry_wait = 120.0  # a Retry-After longer than this is capped

    def __init__(
        self,
        options: BackendOptions,
        *,
        api_key: str | None = None,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
    ):
        try:
            import openai
        except ImportError:
            raise BackendUnavailable(NEEDS_CLIENT) from None
        self._openai = openai
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
        self._scrub = Scrubber(key)
        self._limit = asyncio.Semaphore(max(1, options.max_concurrency))
        timeout = openai.Timeout(
            options.request_timeout, connect=min(self.connect_timeout, options.request_timeout)
        )
        self._runner, self.client = LoopRunner(), None
        try:
            self.client = openai.AsyncOpenAI(
                api_key=key or "EMPTY", base_url=self.base_url, timeout=timeout, max_retries=0
            )
            self.max_len = self._runner.run(self._probe())
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r})"

    # ----- start-up ---------------------------------------------------------------------

    async def _probe(self) -> int | None:
        """GET /models (the client's own quick retries): reachable, key accepted, model served."""
        url = f"{self.base_url}/models"
        quick = self.client.with_options(
            timeout=self.probe_timeout, max_retries=self.probe_attempts - 1
        )
        try:
            data = await quick.get(url, cast_to=object)
        except self._openai.APIStatusError as exc:
            raise self._probe_refused(url, exc.status_code) from None
        except self._openai.APIConnectionError as exc:
            raise self._unreachable(url, self._describe(exc)) from None
        except ValueError:
            data = None
        return self._served_len(url, data)

    def _probe_refused(self, url: str, status: int) -> BackendUnavailable:
        if status in (401, 403):
            return BackendUnavailable(f"--backend openai: {url} " + KEY_REFUSED.format(status=status))
        if retryable(status):
            return self._unreachable(url, f"HTTP {status}")
        return BackendUnavailable(
            f"--backend openai: GET {url} answered HTTP {status}; check that --base-url "
            "points at an OpenAI-compatible API (usually ending in /v1)"
        )

    def _unreachable(self, url: str, problem: str) -> BackendUnavailable:
        return BackendUnavailable(
            f"--backend openai: cannot reach {url} ({problem}); check that the server is running "
            "and that --base-url / OPENAI_BASE_URL names it"
        )

    def _served_len(self, url: str, data: Any) -> int | None:
        try:
            served = {m["id"]: m for m in data["data"]}
        except (KeyError, TypeError):
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

    def _describe(self, exc: BaseException) -> str:
        """A connection failure as the transport saw it (the client's own text is generic)."""
        cause = exc.__cause__ or exc
        text = str(cause)
        return self._scrub(f"{type(cause).__name__}: {text}" if text else type(cause).__name__)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter in [3/4 d, d]; a server's Retry-After is a floor."""
        d = min(self.max_backoff, self.backoff * 2**attempt)
        d *= random.uniform(0.75, 1.0)
        if retry_after is not None:
            d = max(d, min(retry_after, self.max_retry_wait))
        return d

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON, retrying transient failures; BackendError once retries are spent."""
        attempt = 0
        while True:
            data, problem, retry_after = await self._attempt(url, body)
            if problem is None:
                return data
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
            await asyncio.sleep(delay)
            attempt += 1

    async def _attempt(
        self, url: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None, float | None]:
        """One try: (data, None, None), or (_, problem, Retry-After) for a transient failure."""
        openai = self._openai
        try:
            data = await self.client.post(url, body=body, cast_to=object)
        except openai.APIStatusError as exc:
            status, detail = exc.status_code, self._scrub(_server_message(exc.response))
            if not retryable(status):
                raise self._fatal(url, status, detail) from None
            retry_after = retry_after_seconds(exc.response.headers.get("retry-after"))
            return {}, f"HTTP {status}: {detail}", retry_after
        except openai.APIConnectionError as exc:  # timeouts included
            return {}, self._describe(exc), None
        except ValueError:
            raise BackendError(f"--backend openai: POST {url} returned a body that is not JSON") from None
        if not isinstance(data, dict):
            raise BackendError(f"--backend openai: POST {url} returned unexpected JSON")
        return data, None, None

    def _fatal(self, url: str, status: int, detail: str) -> BackendError | BackendUnavailable:
        if status in (401, 403):
            return BackendUnavailable(f"--backend openai: {url} " + KEY_REFUSED.format(status=status))
        return HTTPStatusError(f"--backend openai: POST {url}: HTTP {status}: {detail}", status, detail)

    async def _extension(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        """POST to a vLLM-only endpoint; a server without it gets an error naming the need."""
        try:
            return await self._post(f"{self.root}{path}", body)
        except HTTPStatusError as exc:
            if exc.status in (404, 405):
                raise BackendError(
                    f"--backend openai: {what} {NEEDS_VLLM}; {self.root}{path} answered HTTP {exc.status}"
                ) from None
            raise

    # ----- generation -------------------------------------------------------------------

    def _generate(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]) -> list[list[Sample]]:
        jobs = list(zip(prompts, params, strict=True))
        return self._runner.run(bounded_map(lambda job: self._generate_one(*job), jobs, self._limit))

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

    async def _generate_one(self, prompt: Prompt, p: SamplingParams) -> list[Sample]:
        """One request (Backend.generate already asks greedy requests for one sample)."""
        body = self._sampling_body(p)
        chat = prompt.raw is None and not prompt.prefill
        if chat:
            body["messages"] = prompt.chat()
            if prompt.enable_thinking is not None:
                body["chat_template_kwargs"] = {"enable_thinking": prompt.enable_thinking}
            url = f"{self.base_url}/chat/completions"
        else:
            body["prompt"] = await self._render(prompt)
            body["add_special_tokens"] = False  # the rendered text already holds its specials
            url = f"{self.base_url}/completions"
        data = await self._post_within_context(url, body)
        return _too_long(p.n) if data is None else self._samples(data, p.n, chat)

    async def _post_within_context(self, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """POST a generation; None when the prompt does not fit the model's context."""
        for _ in range(2):
            try:
                return await self._post(url, body)
            except HTTPStatusError as exc:
                room = context_room(exc.detail) if exc.status == 400 else None
                if room is None:
                    raise
                if not 0 < room < body["max_tokens"]:
                    return None
                body = {**body, "max_tokens": room}  # the prompt fits: ask for what is left
        return None

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

    async def _render(self, prompt: Prompt) -> str:
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
        ids = (await self._extension("/tokenize", body, "a prefill or a score"))["tokens"]
        detok = {"model": self.model, "tokens": ids}
        text = (await self._extension("/detokenize", detok, "a prefill or a score"))["prompt"]
        return text + prompt.prefill

    async def _tokenize(self, text: str) -> list[int]:
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        return list((await self._extension("/tokenize", body, "scoring"))["tokens"])

    # ----- scoring ----------------------------------------------------------------------

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        return self._runner.run(self._score(prompts, candidates))

    async def _score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        heads = await bounded_map(self._render_ids, prompts, self._limit)
        jobs = [(head, cand) for head in heads for cand in candidates]
        flat = await bounded_map(lambda job: self._score_one(*job), jobs, self._limit)
        k = len(candidates)
        return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]

    async def _render_ids(self, prompt: Prompt) -> tuple[str, list[int]]:
        text = await self._render(prompt)
        return text, await self._tokenize(text)

    async def _score_one(self, head: tuple[str, list[int]], reply: str) -> float:
        """Summed log P(reply tokens | prompt), split as ChatRenderer.encode_with_reply does."""
        text, prompt_ids = head
        full = await self._tokenize(text + reply)
        reply_ids = (
            full[len(prompt_ids) :]
            if full[: len(prompt_ids)] == prompt_ids
            else await self._tokenize(reply)
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
        data = await self._post(f"{self.base_url}/completions", body)
        plp = (data.get("choices") or [{}])[0].get("prompt_logprobs") or data.get("prompt_logprobs")
        if not plp:
            raise BackendError(
                f"--backend openai: scoring {NEEDS_VLLM}; the server returned no prompt_logprobs"
            )
        start = len(prompt_ids)
        return sum(float(plp[start + j][str(tok)]["logprob"]) for j, tok in enumerate(reply_ids))

    def close(self) -> None:
        """Close the connections and the loop; never waits on a request (they are cancelled)."""
        runner, client = getattr(self, "_runner", None), getattr(self, "client", None)
        self.client = None
        if runner is None or runner.loop.is_closed():
            return
        try:
            if client is not None:
                runner.run(asyncio.wait_for(client.close(), CANCEL_GRACE))
        except Exception:  # closing the pool is best effort; the loop goes either way
            pass
        finally:
            runner.close()
