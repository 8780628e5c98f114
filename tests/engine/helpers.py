"""Small builders shared by the engine tests."""

from __future__ import annotations

import torch

from maxcli.interfaces import RequestID, SamplingParams
from maxcli.kv_cache import KVCacheParams, PagedKVCacheManager
from maxcli.pipelines.core import TextContext


def make_kv(num_blocks: int, page_size: int = 4, prefix_caching: bool = True, head_dim: int = 2) -> PagedKVCacheManager:
    params = KVCacheParams(dtype=torch.float32, num_layers=1, n_kv_heads=1, head_dim=head_dim, page_size=page_size)
    return PagedKVCacheManager(params, num_blocks, enable_prefix_caching=prefix_caching)


def make_ctx(
    tokens: list[int],
    rid: str | None = None,
    max_length: int = 1024,
    eos: tuple[int, ...] = (),
    **sampling: object,
) -> TextContext:
    return TextContext(
        request_id=RequestID(rid),
        tokens=list(tokens),
        max_length=max_length,
        sampling_params=SamplingParams(**sampling).validate(),  # type: ignore[arg-type]
        eos_token_ids=frozenset(eos),
    )
