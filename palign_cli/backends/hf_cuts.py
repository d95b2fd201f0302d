"""The sufficiency curve in one pass: candidates scored at every cut point of one text.

Every truncate probe of a problem is the same judge prompt up to its cut point, so the
question and the whole CoT are read once, and each cut gets only a short tail: the last few
characters before the cut re-tokenized (BPE may merge across a cut), the rest of the prompt
after the CoT, and the candidate reply. Each tail attends to the shared tokens before its own
split point and to itself, through a 4D additive attention mask with per-tail position ids,
so its log-probabilities are those of its own probe prompt (float rounding aside).

The shared part runs first as one plain causal forward (sdpa's fast causal kernel) that keeps
its KV cache. The tails then run in small groups of consecutive cuts, each against views of
that cache cut at the group's last split: a tail never pays for keys far past its own cut,
and each group's mask (tails x (seen + tails)) stays small, unlike one square mask over
everything. Measured on the 2-core CPU with the tiny model this was 1.3-1.5x the floor, where
a single forward with one big mask was 3x and a progressively grown cache 1.7x.
The tokens of each probe equal the tokenization of that probe's own full prompt; `plan_cuts`
builds them and the tests compare them with `renderer.encode_with_reply` on real CoTs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from palign_cli.backends.base import CUT, Backend, CutScores, Prompt

# Characters re-tokenized before a cut to start with; doubled while the split is not stable.
FIRST_MARGIN = 1
# Most mask entries (queries x keys) in one forward on CPU: 2**26 floats is 256 MiB in
# float32; on a GPU four times that (512 MiB in bfloat16).
MASK_ELEMENTS = 1 << 26
# Tail tokens per forward on CPU (see _tail_budget).
TAIL_TOKENS = 512


@dataclass
class CutTokens:
    """One probe: the shared tokens [:split], then `tail`, then one reply per candidate."""

    split: int
    tail: list[int]
    replies: list[list[int]]

    def prompt_len(self) -> int:
        return self.split + len(self.tail)


@dataclass
class CutPlan:
    shared: list[int]
    cuts: list[CutTokens]

    def probe_ids(self, j: int, c: int) -> list[int]:
        """The full token sequence of cut j with candidate c (what per-probe scoring reads)."""
        cut = self.cuts[j]
        return self.shared[: cut.split] + cut.tail + cut.replies[c]


class _Encoder:
    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def batch(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        return [list(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def with_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def split_head(renderer: Any, head: Prompt) -> tuple[str, str] | None:
    """The rendered prompt's text before and after the `{cut}` placeholder, if it is there once."""
    rendered = renderer.render(head)
    if rendered.count(CUT) != 1:
        return None
    i = rendered.index(CUT)
    return rendered[:i], rendered[i + len(CUT):]


def plan_cuts(
    renderer: Any, head: Prompt, text: str, cuts: Sequence[int], candidates: Sequence[str]
) -> CutPlan | None:
    """Token ids for every probe, sharing the tokens of the text before each cut.

    None when the rendered head does not hold the placeholder exactly once.
    """
    parts = split_head(renderer, head)
    if parts is None:
        return None
    before, after = parts
    enc = _Encoder(renderer.tokenizer)
    full = before + text
    shared, offsets = enc.with_offsets(full)
    starts = [o[0] for o in offsets]
    clean = [t == 0 or offsets[t - 1][1] <= offsets[t][0] for t in range(len(offsets))]
    ends = [len(before) + c for c in cuts]
    # First try every cut at the smallest margin, in batched tokenizer calls (the Rust
    # tokenizer runs a batch in parallel); a cut whose split is not stable retries alone.
    splits = [_token_at(starts, clean, end - FIRST_MARGIN) for end in ends]
    windows = [full[starts[s]:end] if s else full[:end] for s, end in zip(splits, ends, strict=True)]
    tails = enc.batch([w + after for w in windows])
    backs = [_token_at(starts, clean, starts[s] - 1) if s else 0 for s in splits]
    wider = enc.batch([full[starts[b]:end] + after for b, end in zip(backs, ends, strict=True)])
    for j, (s, b) in enumerate(zip(splits, backs, strict=True)):
        if s and wider[j] != shared[b:s] + tails[j]:
            splits[j], windows[j], tails[j] = _stable_split(enc, full, shared, starts, clean, ends[j], after, 2 * FIRST_MARGIN)
    if any(not t for t in tails):
        raise ValueError("a probe with no tokens of its own: empty text and prompt suffix")
    with_reply = enc.batch([w + after + cand for w in windows for cand in candidates])
    alone = enc.batch(list(candidates))
    planned = []
    for j, (s, tail) in enumerate(zip(splits, tails, strict=True)):
        replies = [_reply_ids(with_reply[j * len(candidates) + c], tail, alone[c]) for c in range(len(candidates))]
        planned.append(CutTokens(s, tail, replies))
    return CutPlan(shared, planned)


def _token_at(starts: list[int], clean: list[bool], pos: int) -> int:
    """Index of the last clean token start at or before `pos` (0 if none)."""
    lo, hi = 0, len(starts)
    while lo < hi:  # first token starting after pos
        mid = (lo + hi) // 2
        if starts[mid] <= pos:
            lo = mid + 1
        else:
            hi = mid
    t = lo - 1
    while t > 0 and not clean[t]:
        t -= 1
    return max(t, 0)


def _stable_split(
    enc: _Encoder, full: str, shared: list[int], starts: list[int], clean: list[bool], cut: int, after: str,
    margin: int = FIRST_MARGIN,
) -> tuple[int, str, list[int]]:
    """Where this probe's tokens part from the shared ones, the text re-tokenized, its tail.

    The text from a token start a few characters before the cut is re-tokenized with the
    rest of the prompt. The split is accepted only when re-tokenizing from the token before
    it reproduces that shared token and the same tail: then the pre-tokenizer and BPE treat
    that start as a boundary. Otherwise the margin doubles, down to the whole prompt (split
    0), which is exact by definition.
    """
    while True:
        split = _token_at(starts, clean, cut - margin)
        if split == 0:
            return 0, full[:cut], enc.ids(full[:cut] + after)
        window = full[starts[split]:cut]
        tail = enc.ids(window + after)
        back = _token_at(starts, clean, starts[split] - 1)
        wider = enc.ids(full[starts[back]:cut] + after)
        if wider == shared[back:split] + tail:
            return split, window, tail
        margin *= 2


def _reply_ids(with_reply: list[int], tail: list[int], alone: list[int]) -> list[int]:
    """The candidate's tokens as `ChatRenderer.encode_with_reply` makes them: in context (the
    tail's text + the reply) when BPE kept the tail intact, else the reply on its own."""
    if with_reply[: len(tail)] == tail:
        return with_reply[len(tail):]
    return alone


def score_cuts_onepass(
    backend: Any, head: Prompt, text: str, cuts: Sequence[int], candidates: Sequence[str]
) -> CutScores:
    """HFBackend.score_cuts: the shared text read once, every cut's tail in a few chunks.

    Cuts must be ascending; those whose probe (with the longest candidate) would not fit the
    model's context are dropped from the end, and `cuts_scored` says how many were scored.
    """
    plan = plan_cuts(backend.renderer, head, text, cuts, candidates)
    if plan is None:  # placeholder missing or repeated: the generic per-probe path
        return Backend.score_cuts(backend, head, text, cuts, candidates)
    fitting = _fitting(plan, backend.max_len)
    if not fitting:
        return CutScores([], tokens_read=0, cuts_scored=0)
    return _forward(backend, plan, fitting, len(candidates))


def _fitting(plan: CutPlan, max_len: int | None) -> list[int]:
    """Leading cuts whose longest probe fits the context."""
    keep = []
    for j, cut in enumerate(plan.cuts):
        longest = cut.prompt_len() + max(len(r) for r in cut.replies)
        if max_len is not None and longest > max_len:
            break
        keep.append(j)
    return keep


def _tail_budget(backend: Any) -> int:
    """Tail tokens per forward. Small on CPU: a group's tails all read up to its latest split,
    so wide groups waste work there; a GPU wants big forwards (--token-budget, as elsewhere)."""
    if _on_gpu(backend):
        return backend.options.token_budget
    return TAIL_TOKENS


def _mask_elements(backend: Any) -> int:
    return MASK_ELEMENTS * 4 if _on_gpu(backend) else MASK_ELEMENTS


def _on_gpu(backend: Any) -> bool:
    return str(backend.device).startswith("cuda")


def _tail_groups(plan: CutPlan, fitting: list[int], budget: int, max_mask: int = MASK_ELEMENTS) -> list[list[int]]:
    """Consecutive cuts whose tails (with the shared keys they read) fit one forward."""
    groups: list[list[int]] = []
    current: list[int] = []
    size = 0
    for j in fitting:
        cut = plan.cuts[j]
        n = len(cut.tail) + sum(len(r) for r in cut.replies)
        if current and (size + n > budget or (size + n) * (cut.split + size + n) > max_mask):
            groups.append(current)
            current, size = [], 0
        current.append(j)
        size += n
    if current:
        groups.append(current)
    return groups


def _layer_kv(cache: Any) -> list[tuple[Any, Any]]:
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache, strict=True))  # transformers < 4.56


def _forward(backend: Any, plan: CutPlan, fitting: list[int], n_cand: int) -> CutScores:
    """The shared text in one causal forward (sdpa's fast causal path, KV kept), then each
    group of tails against a cache cut to the shared tokens that group may see."""
    from transformers import DynamicCache

    torch = backend.torch
    shared_len = max(plan.cuts[j].split for j in fitting)
    scores: dict[int, list[float]] = {}
    read = shared_len
    full: list[tuple[Any, Any]] = []
    with torch.inference_mode():
        if shared_len:
            ids = torch.tensor([plan.shared[:shared_len]], device=backend.device)
            full = _layer_kv(backend.model(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values)
        for group in _tail_groups(plan, fitting, _tail_budget(backend), _mask_elements(backend)):
            seen = max(plan.cuts[j].split for j in group)
            cache = DynamicCache(ddp_cache_data=[(k[..., :seen, :], v[..., :seen, :]) for k, v in full]) if seen else None
            read += _run_tails(backend, plan, group, seen, cache, n_cand, scores)
    return CutScores([scores[j] for j in fitting], tokens_read=read, cuts_scored=len(fitting),
                     probe_tokens=read - shared_len)


def _run_tails(
    backend: Any, plan: CutPlan, group: list[int], seen: int, cache: Any, n_cand: int,
    scores: dict[int, list[float]],
) -> int:
    """One forward of a group's tails (each seeing the shared tokens before its own split,
    then itself) against a cache of `seen` shared tokens; fills `scores`, returns tokens read."""
    torch = backend.torch
    device, dtype = backend.device, backend.model.dtype
    tokens: list[int] = []
    positions: list[int] = []
    sees: list[int] = []  # per token: how many shared tokens it may see
    owner: list[int] = []  # per token: its segment (a tail, or one reply after it)
    parents: list[int] = []  # per segment: the segment it continues (-1: none)
    targets: list[tuple[int, int, int, tuple[int, ...]]] = []  # (query, token, cut, candidates)
    for j in group:
        cut = plan.cuts[j]
        common = _common_prefix(cut.replies)
        all_cands = tuple(range(n_cand))
        tail_seg = len(parents)
        parents.append(-1)
        # the tail, then the candidates' shared first tokens (scored once, counted for each)
        for u, tok in enumerate(cut.tail + common):
            if u >= len(cut.tail):
                targets.append((len(tokens) - 1, tok, j, all_cands))
            tokens.append(tok)
            positions.append(cut.split + u)
            sees.append(cut.split)
            owner.append(tail_seg)
        trunk_last, start = len(tokens) - 1, cut.split + len(cut.tail) + len(common)
        for c, reply in enumerate(cut.replies):
            seg = len(parents)
            parents.append(tail_seg)
            for u, tok in enumerate(reply[len(common):]):
                # predicted by the token before it: the trunk's last, or the reply's previous
                targets.append((trunk_last if u == 0 else len(tokens) - 1, tok, j, (c,)))
                tokens.append(tok)
                positions.append(start + u)
                sees.append(cut.split)
                owner.append(seg)
    out = backend.model(
        input_ids=torch.tensor([tokens], device=device),
        position_ids=torch.tensor([positions], device=device),
        attention_mask=_mask(torch, sees, owner, parents, seen, device, dtype),
        past_key_values=cache,
        use_cache=cache is not None,
        logits_to_keep=torch.tensor([t[0] for t in targets], device=device),
    )
    logp = torch.log_softmax(out.logits[0].float(), dim=-1)
    rows = torch.arange(len(targets), device=device)
    picked = logp[rows, torch.tensor([t[1] for t in targets], device=device)].tolist()
    for j in group:
        scores[j] = [0.0] * n_cand
    for (_, _, j, cands), value in zip(targets, picked, strict=True):
        for c in cands:
            scores[j][c] += value
    return len(tokens)


def _common_prefix(replies: list[list[int]]) -> list[int]:
    """Tokens every candidate reply starts with ("[" of "[ENOUGH]" and "[NOT_ENOUGH]")."""
    common: list[int] = []
    for column in zip(*replies, strict=False):
        if any(tok != column[0] for tok in column):
            break
        common.append(column[0])
    return common


def _mask(torch: Any, sees: list[int], owner: list[int], parents: list[int], seen: int,
          device: Any, dtype: Any) -> Any:
    """Additive float mask (0 = attend): tail tokens x (`seen` shared tokens + the tails).

    A tail token sees the shared tokens before its split, its own segment causally, and a
    reply also the tail it follows. Float, not boolean: torch's CPU sdpa is about twice as
    fast with an additive mask.
    """
    n = len(sees)
    mask = torch.full((n, seen + n), torch.finfo(dtype).min, dtype=dtype, device=device)
    sees_t = torch.tensor(sees, device=device)
    mask[:, :seen].masked_fill_(torch.arange(seen, device=device)[None, :] < sees_t[:, None], 0.0)
    seg = torch.tensor(owner, device=device)
    parent = torch.tensor(parents, device=device)[seg]
    idx = torch.arange(n, device=device)
    ok = ((seg[:, None] == seg[None, :]) & (idx[None, :] <= idx[:, None])) | (parent[:, None] == seg[None, :])
    mask[:, seen:].masked_fill_(ok, 0.0)
    return mask[None, None]
