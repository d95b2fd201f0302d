"""transformers backend: batched with left padding, batches sized by a token budget.

It runs its own decode loop instead of `model.generate` so that every row of a batch has its
own sampling settings and its own random generator: a record's samples then depend on its
seed alone, not on which other records share its batch, and a resumed run reproduces them.
The processing order matches vLLM's sampler (repetition penalty, temperature, top-k, top-p).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from palign_cli.backends.base import (
    Backend,
    BackendOptions,
    Capabilities,
    CutScores,
    Prompt,
    Sample,
    SamplingParams,
)
from palign_cli.backends.template import ChatRenderer, RenderedTokens

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


@dataclass
class _Row:
    """One sequence being decoded: a (prompt, sample index) pair."""

    prompt_index: int
    ids: list[int]
    params: SamplingParams
    seed: int


def _resolve_dtype(torch, name: str, device: str):
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name not in _DTYPES:
        from palign_cli.errors import UsageError

        raise UsageError(f"--dtype {name!r} is not one of auto, float32, bfloat16, float16")
    return getattr(torch, _DTYPES[name])


class HFBackend(RenderedTokens, Backend):
    name = "hf"
    capabilities = Capabilities(count_tokens=True, curve_in_one_pass=True, probe_on_cached_prefix=True)

    def __init__(self, options: BackendOptions):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # stderr belongs to palign's own progress
        self.torch = torch
        self.options = options
        self.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(options.model)
        self.model = AutoModelForCausalLM.from_pretrained(
            options.model,
            dtype=_resolve_dtype(torch, options.dtype, self.device),
            attn_implementation="sdpa",
        ).to(self.device)
        self.model.eval()
        self.renderer = ChatRenderer(self.tokenizer)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.stop_ids = self._stop_ids()
        config_len = getattr(self.model.config, "max_position_embeddings", None)
        self.max_len = options.max_model_len or config_len

    def _stop_ids(self) -> set[int]:
        ids = set(self.renderer.eos_ids())
        gen = getattr(self.model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(e) for e in eos)
        return ids

    def context_length(self) -> int | None:
        return self.max_len

    # ----- generation -------------------------------------------------------------------

    def _generate(self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]) -> list[list[Sample]]:
        rows: list[_Row] = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            ids = self.renderer.encode_prompt(prompt)
            base = p.seed if p.seed is not None else int.from_bytes(os.urandom(4), "little")
            for j in range(p.n):
                rows.append(_Row(i, ids, p, (base * 1_000_003 + j) % (2**63)))
        results: list[list[Sample]] = [[] for _ in prompts]
        order = sorted(range(len(rows)), key=lambda r: len(rows[r].ids))
        done: dict[int, Sample] = {}
        for batch in self._budget_batches(order, rows):
            for r, sample in zip(batch, self._decode([rows[r] for r in batch])):
                done[r] = sample
        for r in range(len(rows)):  # samples back in (prompt, j) order
            results[rows[r].prompt_index].append(done[r])
        return results

    def _budget_batches(self, order: list[int], rows: list[_Row]) -> list[list[int]]:
        batches, current, longest = [], [], 0
        for r in order:
            need = len(rows[r].ids) + rows[r].params.max_tokens
            if current and max(longest, need) * (len(current) + 1) > self.options.token_budget:
                batches.append(current)
                current, longest = [], 0
            current.append(r)
            longest = max(longest, need)
        if current:
            batches.append(current)
        return batches

    def _left_pad(self, seqs: list[list[int]]):
        torch = self.torch
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, s in enumerate(seqs):
            if s:
                ids[b, width - len(s):] = torch.tensor(s, dtype=torch.long)
                mask[b, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _decode(self, rows: list[_Row]) -> list[Sample]:
        torch = self.torch
        ids, mask = self._left_pad([r.ids for r in rows])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        gens = [torch.Generator(device=self.device).manual_seed(r.seed) for r in rows]
        out_ids: list[list[int]] = [[] for _ in rows]
        finish: list[str | None] = [None] * len(rows)
        limits = [r.params.max_tokens for r in rows]  # Backend.generate fitted them to the context
        past = None
        step_ids, step_pos = ids, positions
        with torch.inference_mode():
            while any(f is None for f in finish):
                out = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=step_pos,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_tokens = []
                for b, row in enumerate(rows):
                    if finish[b] is not None:
                        next_tokens.append(self.pad_id)
                        continue
                    tok = self._pick(logits[b], row.params, row.ids + out_ids[b], gens[b])
                    out_ids[b].append(tok)
                    if tok in self.stop_ids:
                        finish[b] = "stop"
                    elif self._hit_stop_string(out_ids[b], row.params.stop):
                        finish[b] = "stop"
                    elif len(out_ids[b]) >= limits[b]:
                        finish[b] = "length"
                    next_tokens.append(tok)
                step_ids = torch.tensor(next_tokens, device=self.device).unsqueeze(-1)
                step_pos = step_pos[:, -1:] + 1
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
        return [self._sample(out_ids[b], finish[b] or "length", rows[b].params) for b in range(len(rows))]

    def _pick(self, logits, params: SamplingParams, history: list[int], gen) -> int:
        torch = self.torch
        if params.repetition_penalty != 1.0 and history:
            seen = torch.tensor(sorted(set(history)), device=logits.device)
            vals = logits[seen]
            logits[seen] = torch.where(vals > 0, vals / params.repetition_penalty, vals * params.repetition_penalty)
        if params.temperature <= 0:
            return int(torch.argmax(logits))
        logits = logits / params.temperature
        if params.top_k and params.top_k > 0:
            kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, index = torch.sort(probs, descending=True)
            cum = sorted_probs.cumsum(-1)
            drop = (cum - sorted_probs) > params.top_p  # keep the smallest set reaching top_p
            sorted_probs = sorted_probs.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(0, index, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=gen))

    def _hit_stop_string(self, out: list[int], stops: tuple[str, ...]) -> bool:
        if not stops:
            return False
        tail = self.tokenizer.decode(out[-32:], skip_special_tokens=True)
        return any(s in tail for s in stops)

    def _sample(self, out: list[int], finish: str, params: SamplingParams) -> Sample:
        tokens = len(out)
        if out and out[-1] in self.stop_ids:
            out = out[:-1]
        # A sample cut mid-character ends in U+FFFD; vLLM's detokenizer holds such bytes back.
        text = self.tokenizer.decode(out, skip_special_tokens=True).rstrip("\ufffd")
        for s in params.stop:
            if s in text:
                text = text[: text.index(s)]
        return Sample(text=text, finish_reason=finish, tokens=tokens)

    # ----- scoring ----------------------------------------------------------------------

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        seqs, spans = [], []
        for prompt in prompts:
            for cand in candidates:
                prompt_ids, reply_ids = self.renderer.encode_with_reply(prompt, cand)
                seqs.append(prompt_ids + reply_ids)
                spans.append(len(reply_ids))
        flat = self._sequence_logprobs(seqs, spans)
        k = len(candidates)
        return [flat[i * k:(i + 1) * k] for i in range(len(prompts))]

    def _sequence_logprobs(self, seqs: list[list[int]], spans: list[int]) -> list[float]:
        """Sum of log P(token) over the last `span` tokens of each sequence."""
        torch = self.torch
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        result = [0.0] * len(seqs)
        batch: list[int] = []

        def flush() -> None:
            ids, mask = self._left_pad([seqs[i] for i in batch])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
            logp = torch.log_softmax(logits.float(), dim=-1)
            for b, i in enumerate(batch):
                n = spans[i]
                targets = ids[b, -n:]
                preds = logp[b, -n - 1:-1, :]
                result[i] = float(preds.gather(-1, targets.unsqueeze(-1)).sum())

        for i in order:
            if batch and len(seqs[i]) * (len(batch) + 1) > self.options.token_budget:
                flush()
                batch = []
            batch.append(i)
        if batch:
            flush()
        return result

    def score_cuts(self, head: Prompt, text: str, cuts: Sequence[int], candidates: Sequence[str]) -> CutScores:
        try:
            from palign_cli.backends.hf_cuts import score_cuts_onepass
        except ImportError:
            return super().score_cuts(head, text, cuts, candidates)
        return score_cuts_onepass(self, head, text, cuts, candidates)

    # ----- probes on a cached prefix (truncate) ---------------------------------------------

    def open_session(self, head: Prompt, text: str):
        from palign_cli.backends.hf_probe import open_session

        return open_session(self, head, text)

    def score_probes(self, probes, candidates):
        from palign_cli.backends.hf_probe import score_probes

        return score_probes(self, probes, candidates)

    def generate_probes(self, probes, params):
        from palign_cli.backends.hf_probe import generate_probes

        return generate_probes(self, probes, params)

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
