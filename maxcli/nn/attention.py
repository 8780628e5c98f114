"""Paged attention layer and KV-cache binding.

The runner owns the cache tensors and binds one (k, v) pair per layer with `bind_kv_caches`; each step
it sets `maxcli.nn.attention_metadata` (slot mapping, block tables, lengths) around the forward.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from maxcli import ops
from maxcli.nn.attention_metadata import get_attention_metadata


class PagedAttention(nn.Module):
    """Writes the step's K/V into the paged cache, then attends over each sequence's cached K/V.

    k_cache / v_cache: [num_blocks, page_size, num_kv_heads, head_dim], plain attributes (not buffers:
    they are not weights, and the runner places them). forward(q [T, H, D], k, v [T, Hk, D]) -> [T, H*D].
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        scale: float,
        sliding_window: int | None = None,
        softcap: float | None = None,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads {num_heads} is not a multiple of num_kv_heads {num_kv_heads}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.scale, self.sliding_window, self.softcap = scale, sliding_window, softcap
        self.k_cache: torch.Tensor | None = None
        self.v_cache: torch.Tensor | None = None

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.k_cache is None or self.v_cache is None:
            raise RuntimeError("KV cache not bound: call maxcli.nn.bind_kv_caches(model, caches) first")
        meta = get_attention_metadata()
        ops.store_kvcache(k, v, self.k_cache, self.v_cache, meta.slot_mapping)
        out = ops.paged_attention(
            q,
            self.k_cache,
            self.v_cache,
            meta.block_tables,
            meta.cu_seqlens_q,
            meta.seq_lens_k,
            meta.max_seqlen_q,
            meta.max_seqlen_k,
            self.scale,
            sliding_window=self.sliding_window,
            softcap=self.softcap,
        )
        return out.reshape(q.shape[0], self.num_heads * self.head_dim)

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}, "
            f"sliding_window={self.sliding_window}, softcap={self.softcap}"
        )


def paged_attention_layers(model: nn.Module) -> list[PagedAttention]:
    """The model's attention layers in registration (= layer) order."""
    return [m for m in model.modules() if isinstance(m, PagedAttention)]


def bind_kv_caches(model: nn.Module, caches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Give layer i the cache pair caches[i]; each tensor must be [num_blocks, page_size, Hk, D]."""
    layers = paged_attention_layers(model)
    if len(caches) != len(layers):
        raise ValueError(f"got {len(caches)} KV cache pairs for {len(layers)} attention layers")
    for i, (layer, (k, v)) in enumerate(zip(layers, caches)):
        want = (layer.num_kv_heads, layer.head_dim)
        for name, t in (("k", k), ("v", v)):
            if t.dim() != 4 or tuple(t.shape[2:]) != want:
                raise ValueError(
                    f"layer {i} {name} cache has shape {tuple(t.shape)}, expected [num_blocks, page_size, {want[0]}, {want[1]}]"
                )
        if k.shape != v.shape:
            raise ValueError(f"layer {i} k and v caches differ in shape: {tuple(k.shape)} vs {tuple(v.shape)}")
        layer.k_cache, layer.v_cache = k, v
