"""Paged KV cache (mirrors `max.kv_cache`): block pool with prefix caching and PagedKVCacheManager."""

from __future__ import annotations

from typing import Any

from maxcli.config.enums import KVCacheStrategy
from maxcli.kv_cache.block_pool import BlockPool, KVCacheOutOfBlocks, hash_block_tokens
from maxcli.kv_cache.paged_cache import (
    KVCacheParams,
    KVCacheRequestError,
    PagedKVCacheManager,
    estimate_num_blocks,
)
from maxcli.kv_cache.step_inputs import StepInputs, build_next_decode_inputs, build_step_inputs


def __getattr__(name: str) -> Any:
    # KVCacheConfig lives with the other config sections; imported lazily so that config modules
    # may import this package without an import cycle.
    if name == "KVCacheConfig":
        from maxcli.config.sections import KVCacheConfig

        return KVCacheConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BlockPool",
    "KVCacheConfig",
    "KVCacheOutOfBlocks",
    "KVCacheParams",
    "KVCacheRequestError",
    "KVCacheStrategy",
    "PagedKVCacheManager",
    "StepInputs",
    "build_next_decode_inputs",
    "build_step_inputs",
    "estimate_num_blocks",
    "hash_block_tokens",
]
