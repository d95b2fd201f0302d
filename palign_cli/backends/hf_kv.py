"""KV-cache plumbing for probes on a cached prefix (hf_probe.py): a cache layer that appends
into a preallocated buffer, and the CPU attention paths that avoid building big masks and
copying caches. Everything here is exact: the same attention, computed in parts.
"""

from __future__ import annotations

from typing import Any

# ----- attention without big masks or copies (CPU) ---------------------------------------

_EXTENSION = "palign_extension"


def _extension_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any):
    """sdpa, except for a chunk of queries after a cached past with no mask given: there, the
    past is attended in full and the chunk causally, in two kernel calls merged by their
    log-sum-exp. On CPU that skips building a (chunk x past+chunk) mask, which costs more
    than the attention itself, and keeps the causal kernel for the chunk."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    prefix = kwargs.pop("palign_prefix", None)
    if prefix is not None:
        return _ragged_attention(module, query, key, value, attention_mask, prefix, kwargs.get("scaling"))
    q_len, k_len = query.shape[2], key.shape[2]
    if attention_mask is not None or q_len == 1 or q_len >= k_len:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if key.shape[1] != query.shape[1]:
        key = repeat_kv(key, query.shape[1] // key.shape[1])
        value = repeat_kv(value, query.shape[1] // value.shape[1])
    past = k_len - q_len
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    scale = kwargs.get("scaling")
    out_past, lse_past = flash(query, key[:, :, :past], value[:, :, :past], scale=scale)
    out_new, lse_new = flash(query, key[:, :, past:], value[:, :, past:], is_causal=True, scale=scale)
    lse = torch.logaddexp(lse_past, lse_new)
    out = out_past * torch.exp(lse_past - lse)[..., None] + out_new * torch.exp(lse_new - lse)[..., None]
    return out.transpose(1, 2).contiguous(), None


def _ragged_attention(module: Any, query: Any, key: Any, value: Any, mask: Any, prefix: list, scale: Any):
    """Probe rows on CPU without copying their caches into a padded batch: each row attends to
    its own session's keys [0, split) in place, and the batch to its new keys (tails, replies,
    decoded tokens) under `mask`; the two parts merge by their log-sum-exp."""
    import torch
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    out_new, lse_new = flash(query, key, value, attn_mask=mask, scale=scale)
    outs = []
    for b, (session, split) in enumerate(prefix):
        if not split:
            outs.append(out_new[b])
            continue
        kb, vb = session.keys(module.layer_idx)
        kb, vb = kb[:, :, :split], vb[:, :, :split]
        if groups > 1:
            kb, vb = repeat_kv(kb, groups), repeat_kv(vb, groups)
        out_old, lse_old = flash(query[b:b + 1], kb, vb, scale=scale)
        lse = torch.logaddexp(lse_old[0], lse_new[b])
        outs.append(out_old[0] * torch.exp(lse_old[0] - lse)[..., None] + out_new[b] * torch.exp(lse_new[b] - lse)[..., None])
    return torch.stack(outs).transpose(1, 2).contiguous(), None


def in_place(backend: Any) -> bool:
    """Whether probe rows attend to their caches in place (CPU) rather than padded copies."""
    return str(backend.device) == "cpu" and backend.model.config._attn_implementation == "sdpa"


class extension_attention:  # noqa: N801 - used as a context manager, like torch's
    """While active, a CPU model's attention runs `_extension_attention` (mask-free chunks);
    elsewhere (CUDA) the model's own sdpa with the mask transformers builds."""

    def __init__(self, backend: Any):
        self.config = backend.model.config
        self.on = str(backend.device) == "cpu" and self.config._attn_implementation == "sdpa"

    def __enter__(self) -> None:
        if self.on:
            from transformers import AttentionInterface

            if _EXTENSION not in AttentionInterface._global_mapping:
                AttentionInterface.register(_EXTENSION, _extension_attention)
            self.config._attn_implementation = _EXTENSION

    def __exit__(self, *exc: Any) -> None:
        if self.on:
            self.config._attn_implementation = "sdpa"



# ----- a cache that appends in place ----------------------------------------------------


def cache_over(layers: list[Any]) -> Any:
    """A DynamicCache over these layers (kept by the caller: they outlive the forward)."""
    from transformers import DynamicCache

    cache = DynamicCache(ddp_cache_data=[(None, None)] * len(layers))
    cache.layers = layers
    return cache


_BUFFER_LAYER = None


def buffer_layer():
    """transformers' DynamicLayer, but appending into a preallocated buffer instead of
    concatenating: a cache read in chunks, or a batch decoding token by token, is not copied
    whole at every step. `keys`/`values` are views of the filled part."""
    global _BUFFER_LAYER
    if _BUFFER_LAYER is not None:
        return _BUFFER_LAYER
    import torch
    from transformers.cache_utils import DynamicLayer

    class BufferLayer(DynamicLayer):
        def __init__(self, capacity: int = 0, keys: Any = None, values: Any = None, length: int = 0):
            super().__init__()
            self.capacity, self.buf_k, self.buf_v, self.length = capacity, keys, values, length
            if keys is not None:
                self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
                self._views()

        def _views(self) -> None:
            self.keys = self.buf_k[:, :, : self.length]
            self.values = self.buf_v[:, :, : self.length]

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            b, h, _, d = key_states.shape
            self.buf_k = key_states.new_empty((b, h, self.capacity, d))
            self.buf_v = value_states.new_empty((b, h, self.capacity, value_states.shape[-1]))

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.buf_k.shape[-2]:  # grow (rarely: capacities are sized up front)
                grow = max(end, 2 * self.buf_k.shape[-2])
                pad = (0, 0, 0, grow - self.buf_k.shape[-2])
                self.buf_k = torch.nn.functional.pad(self.buf_k, pad)
                self.buf_v = torch.nn.functional.pad(self.buf_v, pad)
            self.buf_k[:, :, self.length:end] = key_states
            self.buf_v[:, :, self.length:end] = value_states
            self.length = end
            self._views()
            return self.keys, self.values

        def shrink(self, length: int) -> None:
            """Keep the first `length` tokens in a buffer of just that size (frees memory)."""
            self.buf_k = self.buf_k[:, :, :length].clone()
            self.buf_v = self.buf_v[:, :, :length].clone()
            self.length = min(self.length, length)
            self._views()

        def batch_select_indices(self, indices: Any) -> None:
            self.buf_k, self.buf_v = self.buf_k[indices], self.buf_v[indices]
            self._views()

    _BUFFER_LAYER = BufferLayer
    return BufferLayer
