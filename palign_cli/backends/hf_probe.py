"""Probes on a cached prefix: each CoT read at most once, and only as far as the search goes.

Every truncate probe of a problem is the same judge prompt up to its cut. A `PrefixSession`
keeps the KV cache of that shared part (the rendered prompt's head + the CoT), built lazily:
only up to the furthest cut any probe has asked for, extended by a chunked prefill when a
later probe asks beyond it. A binary search whose first probe at the middle says ENOUGH never
reads the second half.

A probe is then a short tail on that cache: the last characters before the cut re-tokenized
(`hf_cuts` finds a split where BPE agrees, so the probe's tokens equal those of its own full
prompt), the prompt's suffix, then either the candidate replies (logprob) or a greedy decode
(generate). The tails of all problems in one scheduler round go into one forward over a
ragged batch, each row with its own position ids and its tail right-padded. On a GPU each
row's cache is copied into a padded batch cache (keys past the row's split masked): one big
forward is what pays there. On CPU nothing is copied: each row attends to its own cache in
place and the batch to its new keys, merged by log-sum-exp (`hf_kv._ragged_attention`). Rows are
grouped so that computed tokens stay within `--token-budget` (and padded copies within 4x
it); decode steps of a generate round are batched the same way, and rows that stop drop out.

Decisions equal those of probing each prefix on its own prompt: same tokens, and (float
rounding aside) the same log-probabilities; a generate probe samples with the same per-row
seed and the same processing order as `HFBackend.generate` (tests compare both).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from palign_cli.backends.base import PROMPT_TOO_LONG, ProbeCost, Prompt, Sample, SamplingParams
from palign_cli.backends.hf_cuts import (
    FIRST_MARGIN,
    MASK_ELEMENTS,
    CutTokens,
    _common_prefix,
    _Encoder,
    _reply_ids,
    _stable_split,
    split_head,
)
from palign_cli.backends.hf_kv import buffer_layer, cache_over, extension_attention, in_place


class PrefixSession:
    """One problem's judge prompt around a text: its tokens, and a KV cache grown on demand."""

    def __init__(self, backend: Any, before: str, after: str, text: str):
        self.backend = backend
        self.after = after
        self.offset = len(before)
        self.enc = _Encoder(backend.renderer.tokenizer)
        self.full = before + text
        self.shared, offsets = self.enc.with_offsets(self.full)
        self.starts = [o[0] for o in offsets]
        self.clean = [t == 0 or offsets[t - 1][1] <= offsets[t][0] for t in range(len(offsets))]
        self.layers: list[Any] = []  # per model layer, a _BufferLayer holding shared[:cached]
        self.cached = 0
        self.reach: int | None = None  # the furthest cut (characters) the search may still ask
        self._cuts: dict[tuple[int, tuple[str, ...]], CutTokens] = {}

    def cut(self, cut: int, candidates: Sequence[str] = ()) -> CutTokens:
        """The probe's tokens at `cut` (characters into the text): shared[:split] + tail + reply."""
        key = (cut, tuple(candidates))
        if key not in self._cuts:
            end = self.offset + cut
            split, window, tail = _stable_split(
                self.enc, self.full, self.shared, self.starts, self.clean, end, self.after, FIRST_MARGIN
            )
            if not tail:
                raise ValueError("a probe with no tokens of its own: empty text and prompt suffix")
            replies = []
            for cand in candidates:
                replies.append(_reply_ids(self.enc.ids(window + self.after + cand), tail, self.enc.ids(cand)))
            self._cuts[key] = CutTokens(split, tail, replies)
        return self._cuts[key]

    def extend(self, upto: int, chunk: int) -> int:
        """Read shared[cached:upto] into the cache, `chunk` tokens per forward; tokens read."""
        read = 0
        torch, model = self.backend.torch, self.backend.model
        with extension_attention(self.backend):
            while self.cached < upto:
                read += self._chunk(torch, model, min(upto, self.cached + chunk))
        return read

    def _chunk(self, torch: Any, model: Any, end: int) -> int:
        """One chunked-prefill forward of shared[cached:end] on the cache."""
        if not self.layers:
            self.layers = [buffer_layer()(capacity=len(self.shared)) for _ in range(model.config.num_hidden_layers)]
        ids = torch.tensor([self.shared[self.cached:end]], device=self.backend.device)
        positions = torch.arange(self.cached, end, device=self.backend.device)[None]
        model(input_ids=ids, position_ids=positions, past_key_values=cache_over(self.layers), use_cache=True,
              logits_to_keep=1)
        read, self.cached = end - self.cached, end
        return read

    def keys(self, layer: int) -> tuple[Any, Any]:
        """Cached keys and values of one model layer, [1, heads, cached, head_dim] views."""
        return self.layers[layer].keys, self.layers[layer].values

    def trim_to_cut(self, cut: int) -> None:
        """The search will ask no cut beyond `cut`: drop the cached tokens no such probe can
        see (those starting at or after it), when that frees at least a quarter of the cache."""
        upto = bisect.bisect_left(self.starts, self.offset + cut)
        if upto < 0.75 * self.cached:
            for layer in self.layers:
                layer.shrink(upto)
            self.cached = upto

    def close(self) -> None:
        self.layers, self.cached = [], 0


def open_session(backend: Any, head: Prompt, text: str) -> PrefixSession | None:
    """A session for the probes `head` with `{cut}` replaced by text[:cut]; None when the
    rendered head does not hold the placeholder exactly once."""
    parts = split_head(backend.renderer, head)
    if parts is None:
        return None
    return PrefixSession(backend, parts[0], parts[1], text)


# ----- rows of a batched round -----------------------------------------------------------


@dataclass
class _Row:
    """One probe in a batch: the session's first `split` cached tokens, then `tokens`."""

    session: PrefixSession
    cut: CutTokens
    tokens: list[int]
    positions: list[int]
    owner: list[int]  # per token: its segment (the tail, or one reply after it)
    parents: list[int]  # per segment: the segment it continues (-1: none)
    extra: int = 0  # decode room after the tokens (generate)
    targets: list[tuple[int, int, tuple[int, ...]]] = field(default_factory=list)  # (query, token, candidates)

    @property
    def split(self) -> int:
        return self.cut.split

    def width(self) -> int:
        return self.split + len(self.tokens) + self.extra


def _score_row(session: PrefixSession, cut: CutTokens, n_cand: int) -> _Row:
    """Tail, the candidates' shared first tokens (scored once), then each candidate's rest."""
    row = _Row(session, cut, [], [], [], [])
    common = _common_prefix(cut.replies)
    all_cands = tuple(range(n_cand))
    row.parents.append(-1)
    for u, tok in enumerate(cut.tail + common):
        if u >= len(cut.tail):
            row.targets.append((len(row.tokens) - 1, tok, all_cands))
        row.tokens.append(tok)
        row.positions.append(cut.split + u)
        row.owner.append(0)
    trunk_last, start = len(row.tokens) - 1, cut.split + len(cut.tail) + len(common)
    for c, reply in enumerate(cut.replies):
        seg = len(row.parents)
        row.parents.append(0)
        for u, tok in enumerate(reply[len(common):]):
            row.targets.append((trunk_last if u == 0 else len(row.tokens) - 1, tok, (c,)))
            row.tokens.append(tok)
            row.positions.append(start + u)
            row.owner.append(seg)
    return row


# Padded cache tokens a group of probes may copy, per --token-budget token: a copied token
# holds only its keys and values, a computed one also its activations and logits.
KEYS_PER_BUDGET = 4


def _groups(rows: list[_Row], budget: int, max_mask: int = MASK_ELEMENTS) -> list[list[int]]:
    """Rows (sorted by width, so padding is small) in groups whose padded computed tokens
    (tails, replies, decode room) stay within `budget`, padded cache copies within
    KEYS_PER_BUDGET x `budget`, and the mask within `max_mask` elements (a tail that fell
    back to its whole prompt, split 0, is long)."""
    order = sorted(range(len(rows)), key=lambda i: rows[i].width())
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        group = [rows[j] for j in current] + [rows[i]]
        keys = max(r.split for r in group)
        tail = max(len(r.tokens) + r.extra for r in group)
        over = tail * len(group) > budget or (keys + tail) * len(group) > KEYS_PER_BUDGET * budget
        if current and (over or len(group) * tail * (keys + tail) > max_mask):
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    return groups


def _batch_forward(backend: Any, rows: list[_Row], keep: list[int], room: int = 0):
    """One forward of the rows' tails over their sessions' caches, padded to a common shape.

    Returns the model output and the padded key length. Keys past a row's split are masked, so
    a row sees exactly shared[:split] and its own tail, as its own prompt would. Logits are
    computed at the tail positions in `keep` only (sorted; their union over the rows).
    """
    torch = backend.torch
    device, dtype = backend.device, backend.model.dtype
    ragged = in_place(backend)
    b, keys = len(rows), 0 if ragged else max(r.split for r in rows)
    width = max(len(r.tokens) for r in rows)
    ids = torch.full((b, width), backend.pad_id, dtype=torch.long)
    pos = torch.zeros((b, width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.tokens)] = torch.tensor(r.tokens)
        pos[i, : len(r.tokens)] = torch.tensor(r.positions)
    layers = []
    first = None if ragged else next((r.session for r in rows if r.split), None)
    for layer in range(backend.model.config.num_hidden_layers):
        if first is None:  # ragged, or no row has shared tokens: a cache for the tails and replies
            layers.append(buffer_layer()(capacity=width + room))
            continue
        k0, v0 = first.keys(layer)
        k = k0.new_empty((b, k0.shape[1], keys + width + room, k0.shape[3]))
        v = v0.new_empty((b, v0.shape[1], keys + width + room, v0.shape[3]))
        # every slot a row does not fill is zeroed: masked keys must still be finite
        k[:, :, keys:] = 0.0
        v[:, :, keys:] = 0.0
        for i, r in enumerate(rows):
            rk, rv = r.session.keys(layer) if r.split else (None, None)
            if r.split:
                k[i, :, : r.split] = rk[0, :, : r.split]
                v[i, :, : r.split] = rv[0, :, : r.split]
            k[i, :, r.split: keys] = 0.0
            v[i, :, r.split: keys] = 0.0
        layers.append(buffer_layer()(keys=k, values=v, length=keys))
    mask = torch.full((b, 1, width, keys + width), torch.finfo(dtype).min, dtype=dtype)
    for i, r in enumerate(rows):
        n = len(r.tokens)
        if not ragged:
            mask[i, 0, :, : r.split] = 0.0
        owner = torch.tensor(r.owner)
        parent = torch.tensor(r.parents)[owner]
        idx = torch.arange(n)
        ok = ((owner[:, None] == owner[None, :]) & (idx[None, :] <= idx[:, None])) | (parent[:, None] == owner[None, :])
        mask[i, 0, :n, keys: keys + n].masked_fill_(ok, 0.0)
        mask[i, 0, n:, keys: keys + n] = 0.0  # padded queries see something (no NaN); unused
    extra = {"palign_prefix": [(r.session, r.split) for r in rows]} if ragged else {}
    with extension_attention(backend):
        out = backend.model(
            input_ids=ids.to(device),
            position_ids=pos.to(device),
            attention_mask=mask.to(device),
            past_key_values=cache_over(layers),
            use_cache=True,
            logits_to_keep=torch.tensor(keep, device=device),
            **extra,
        )
    return out, keys, width



# A probe needing the cache extended reads on to the furthest cut its search may still ask
# (`PrefixSession.reach`) when that adds at most this share of what it needs anyway: the end of
# a run of NOT_ENOUGH verdicts then costs one forward, not one per ever smaller step.
READ_AHEAD = 0.25


def _prefill(backend: Any, sessions_upto: list[tuple[PrefixSession, int]]) -> tuple[int, int]:
    """Extend each session's cache to the split its probe needs; (tokens read, forwards)."""
    chunk = max(256, backend.options.token_budget)
    read = forwards = 0
    for session, upto in sessions_upto:
        if upto <= session.cached:
            continue
        if session.reach is not None:
            ahead = session.cut(session.reach).split
            if upto < ahead <= upto + READ_AHEAD * upto:
                upto = ahead
        before = session.cached
        read += session.extend(upto, chunk)
        forwards += -(-(upto - before) // chunk)
    return read, forwards


# ----- the two judges' batched rounds -----------------------------------------------------


def score_probes(
    backend: Any, probes: Sequence[tuple[PrefixSession, int]], candidates: Sequence[str]
) -> tuple[list[list[float]], ProbeCost]:
    """Per probe (session, cut), the summed log-probability of each candidate reply."""
    torch = backend.torch
    rows = [_score_row(s, s.cut(c, candidates), len(candidates)) for s, c in probes]
    cost = ProbeCost()
    results: list[list[float]] = [[0.0] * len(candidates) for _ in rows]
    with torch.inference_mode():
        cost.cot_tokens, cost.forwards = _prefill(backend, [(r.session, r.split) for r in rows])
        for group in _groups(rows, backend.options.token_budget):
            batch = [rows[i] for i in group]
            keep = sorted({t[0] for r in batch for t in r.targets})
            out, _, _ = _batch_forward(backend, batch, keep)
            cost.forwards += 1
            # only the rows' target positions: (targets x vocabulary), not (batch x width x vocabulary)
            where = [(b, t[0]) for b, i in enumerate(group) for t in rows[i].targets]
            tokens = [t[1] for i in group for t in rows[i].targets]
            column = {q: j for j, q in enumerate(keep)}
            picked_logits = out.logits[[b for b, _ in where], [column[q] for _, q in where]].float()
            picked = torch.log_softmax(picked_logits, dim=-1)[torch.arange(len(tokens)), tokens].tolist()
            n = 0
            for i in group:
                cost.probe_tokens += len(rows[i].tokens)
                for _, _, cands in rows[i].targets:
                    for c in cands:
                        results[i][c] += picked[n]
                    n += 1
    return results, cost


def generate_probes(
    backend: Any, probes: Sequence[tuple[PrefixSession, int]], params: Sequence[SamplingParams]
) -> tuple[list[Sample], ProbeCost]:
    """One sample per probe (n is taken as 1), as `HFBackend.generate` would give it."""
    torch = backend.torch
    cost = ProbeCost()
    samples: list[Sample | None] = [None] * len(probes)
    rows: list[_Row] = []
    live: list[int] = []
    limits: list[int] = []
    for i, ((s, c), p) in enumerate(zip(probes, params, strict=True)):
        cut = s.cut(c)
        room = p.max_tokens
        if backend.max_len:
            room = min(room, backend.max_len - cut.prompt_len())
        if room <= 0:
            samples[i] = Sample("", PROMPT_TOO_LONG, 0)
            continue
        n = len(cut.tail)
        rows.append(_Row(s, cut, list(cut.tail), [cut.split + u for u in range(n)], [0] * n, [-1], extra=room))
        live.append(i)
        limits.append(room)
    with torch.inference_mode():
        cost.cot_tokens, cost.forwards = _prefill(backend, [(r.session, r.split) for r in rows])
        for group in _groups(rows, backend.options.token_budget):
            batch = [rows[i] for i in group]
            done = _decode(backend, batch, [params[live[i]] for i in group], [limits[i] for i in group], cost)
            for i, sample in zip(group, done, strict=True):
                samples[live[i]] = sample
    return [s for s in samples if s is not None], cost


def _select_rows(past: Any, index: Any) -> None:
    """Keep only these batch rows of a DynamicCache (stopped rows drop out)."""
    for layer in past.layers:
        layer.batch_select_indices(index)


def _seed_generator(backend: Any, p: SamplingParams):
    """The generator `HFBackend._generate` gives sample 0 of a prompt with these params."""
    if p.temperature <= 0:
        return None
    base = p.seed if p.seed is not None else int.from_bytes(os.urandom(4), "little")
    return backend.torch.Generator(device=backend.device).manual_seed((base * 1_000_003) % (2**63))


def _decode(backend: Any, rows: list[_Row], params: list[SamplingParams], limits: list[int], cost: ProbeCost) -> list[Sample]:
    """Tails in one forward, then batched decode steps; a stopped row drops out of the batch."""
    torch = backend.torch
    device, dtype = backend.device, backend.model.dtype
    gens = [_seed_generator(backend, p) for p in params]
    ragged = in_place(backend)
    last = [len(r.tokens) - 1 for r in rows]
    keep = sorted(set(last))
    out, keys, width = _batch_forward(backend, rows, keep, room=max(limits))
    cost.forwards += 1
    cost.probe_tokens += sum(len(r.tokens) for r in rows)
    past = out.past_key_values
    step_logits = out.logits[list(range(len(rows))), [keep.index(q) for q in last]].float()
    outs: list[list[int]] = [[] for _ in rows]
    finish: list[str | None] = [None] * len(rows)
    active = list(range(len(rows)))  # batch position -> row
    # per row: which keys it may see (its shared split, its tail); decode keys are appended
    base = torch.full((len(rows), keys + width), torch.finfo(dtype).min, dtype=dtype)
    for i, r in enumerate(rows):
        if keys:  # padded copies of the caches (else each row's own cache, in place)
            base[i, : r.split] = 0.0
        base[i, keys: keys + len(r.tokens)] = 0.0
    base = base.to(device)
    step = 0
    while True:
        next_tokens = []
        for b, i in enumerate(active):
            r, p = rows[i], params[i]
            history = (r.session.shared[: r.split] + r.tokens + outs[i]) if p.repetition_penalty != 1.0 else []
            tok = backend._pick(step_logits[b], p, history, gens[i])
            outs[i].append(tok)
            if tok in backend.stop_ids or backend._hit_stop_string(outs[i], p.stop):
                finish[i] = "stop"
            elif len(outs[i]) >= limits[i]:
                finish[i] = "length"
            next_tokens.append(tok)
        keep = [b for b, i in enumerate(active) if finish[i] is None]
        if not keep:
            break
        if len(keep) < len(active):
            index = torch.tensor(keep, device=device)
            _select_rows(past, index)
            base = base.index_select(0, index)
            next_tokens = [next_tokens[b] for b in keep]
            active = [active[b] for b in keep]
        step += 1
        base = torch.cat([base, torch.zeros((len(active), 1), dtype=dtype, device=device)], dim=-1)
        ids = torch.tensor(next_tokens, device=device)[:, None]
        pos = torch.tensor([rows[i].split + len(rows[i].tokens) + step - 1 for i in active], device=device)[:, None]
        extra = {"palign_prefix": [(rows[i].session, rows[i].split) for i in active]} if ragged else {}
        with extension_attention(backend):
            out = backend.model(input_ids=ids, position_ids=pos, attention_mask=base[:, None, None, :],
                                past_key_values=past, use_cache=True, **extra)
        past = out.past_key_values
        step_logits = out.logits[:, -1, :].float()
        cost.forwards += 1
        cost.probe_tokens += len(active)
    return [backend._sample(outs[i], finish[i] or "length", params[i]) for i in range(len(rows))]
