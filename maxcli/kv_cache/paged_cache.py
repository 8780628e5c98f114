"""PagedKVCacheManager: one K/V tensor cut into pages, page tables per request, prefix sharing.

Lifecycle of a request (the seeds' API): claim(id) -> alloc(context, num_steps) before each forward ->
fetch(batch) for the forward's inputs -> step(batch) after it (commit: makes newly completed pages
shareable) -> release(id).
Invariant per claimed request: pages[i] holds the K/V of token positions [i*page_size, (i+1)*page_size);
the first `num_registered` pages are full, hashed in the pool, and never written again.
"""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from maxcli.interfaces import RequestID
from maxcli.kv_cache.block_pool import BlockHash, BlockPool, KVCacheOutOfBlocks, hash_block_tokens
from maxcli.kv_cache.step_inputs import StepInputs, build_step_inputs, empty_step_inputs

if TYPE_CHECKING:
    from maxcli.pipelines.core.context import TextContext


class KVCacheRequestError(ValueError):
    """The KV cache was asked about a request in the wrong state (not claimed, claimed twice, ...)."""


@dataclass(frozen=True)
class KVCacheParams:
    """Shape of the cache: [num_layers, 2 (K, V), num_blocks, page_size, n_kv_heads, head_dim]."""

    dtype: torch.dtype
    num_layers: int
    n_kv_heads: int
    head_dim: int
    page_size: int = 16

    def __post_init__(self) -> None:
        for name in ("num_layers", "n_kv_heads", "head_dim", "page_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"KVCacheParams.{name} must be >= 1, got {getattr(self, name)}")

    @property
    def bytes_per_page(self) -> int:
        """Bytes one page takes across all layers, K and V."""
        itemsize = torch.empty((), dtype=self.dtype).element_size()
        return self.num_layers * 2 * self.page_size * self.n_kv_heads * self.head_dim * itemsize


def estimate_num_blocks(params: KVCacheParams, memory_bytes: int) -> int:
    """How many whole pages fit in `memory_bytes`."""
    if memory_bytes < 0:
        raise ValueError(f"memory budget must be >= 0 bytes, got {memory_bytes}")
    return memory_bytes // params.bytes_per_page


@dataclass
class _RequestPages:
    pages: list[int] = field(default_factory=list)
    # Chained hashes of the context's leading full blocks, computed lazily; tokens only ever get
    # appended to a context, so an entry never goes stale while the request is claimed.
    hashes: list[BlockHash] = field(default_factory=list)
    num_registered: int = 0
    started: bool = False  # the first alloc (prefix match) has happened
    table_tensor: torch.Tensor | None = None  # int32 copy of `pages`, rebuilt when pages grow


class PagedKVCacheManager:
    def __init__(
        self,
        params: KVCacheParams,
        num_blocks: int,
        device: str | torch.device = "cpu",
        enable_prefix_caching: bool = True,
    ) -> None:
        self.params = params
        self.page_size = params.page_size
        self.device = torch.device(device)
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        shape = (params.num_layers, 2, num_blocks, params.page_size, params.n_kv_heads, params.head_dim)
        if self.device.type == "cpu":
            # An anonymous mapping: zero-filled by the kernel (attention reads whole pages, masking the
            # unwritten slots, so they must hold finite values), and unlike torch.zeros (a memset) no
            # page is touched here: RSS grows 4 KiB at a time as requests write. (numpy's zeros would
            # ask for transparent huge pages: one write per layer's K or V commits 2 MiB.)
            nbytes = math.prod(shape) * torch.empty((), dtype=params.dtype).element_size()
            self.kv_cache = torch.frombuffer(mmap.mmap(-1, max(nbytes, 1)), dtype=torch.uint8, count=nbytes)
            self.kv_cache = self.kv_cache.view(params.dtype).view(shape)
        else:
            self.kv_cache = torch.zeros(shape, dtype=params.dtype, device=self.device)
        self._requests: dict[RequestID, _RequestPages] = {}
        self.prefix_cache_queries = 0  # prompt tokens looked up on first alloc
        self.prefix_cache_hits = 0  # of those, tokens served from the cache

    # -- views and counts -----------------------------------------------------------------------
    def layer_caches(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Contiguous (k_cache, v_cache) views of one layer, each [num_blocks, page_size, Hk, D]."""
        return self.kv_cache[layer, 0], self.kv_cache[layer, 1]

    @property
    def total_num_pages(self) -> int:
        return self.pool.num_blocks

    @property
    def num_free_blocks(self) -> int:
        """Pages holding nothing (excludes cached prefix pages, which are evictable)."""
        return self.pool.num_free

    @property
    def num_cached_blocks(self) -> int:
        """Unreferenced pages kept for prefix reuse."""
        return self.pool.num_cached

    @property
    def num_available_blocks(self) -> int:
        """Pages an alloc can take: free plus evictable cached ones."""
        return self.pool.num_available

    @property
    def num_used_blocks(self) -> int:
        """Pages referenced by live requests (a shared page counts once)."""
        return self.pool.num_used

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.total_num_pages

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0

    # -- request lifecycle ----------------------------------------------------------------------
    def claim(self, request_id: RequestID) -> None:
        if request_id in self._requests:
            raise KVCacheRequestError(f"request {request_id} is already claimed in the KV cache")
        self._requests[request_id] = _RequestPages()

    def contains(self, request_id: RequestID) -> bool:
        return request_id in self._requests

    def release(self, request_id: RequestID) -> None:
        """Drop the request's pages; hashed ones stay findable in the LRU. Unknown ids are ignored."""
        req = self._requests.pop(request_id, None)
        if req is None:
            return
        # Tail pages first, so the LRU evicts a prompt's tail before its (more shareable) head.
        for page in reversed(req.pages):
            self.pool.release(page)

    def _get(self, request_id: RequestID) -> _RequestPages:
        req = self._requests.get(request_id)
        if req is None:
            raise KVCacheRequestError(f"request {request_id} is not claimed in the KV cache; call claim() first")
        return req

    # -- prefix matching ------------------------------------------------------------------------
    def _block_hash(self, req: _RequestPages, context: TextContext, i: int) -> BlockHash:
        """Chained hash of block i; the chain of a request run with a LoRA adapter starts from the adapter's
        name, so two adapters (or an adapter and the base) never share pages for the same tokens."""
        ps, tokens = self.page_size, context.tokens
        while len(req.hashes) <= i:
            j = len(req.hashes)
            root = None if context.lora_name is None else hash(("lora", context.lora_name))
            parent = req.hashes[-1] if req.hashes else root
            req.hashes.append(hash_block_tokens(parent, tokens[j * ps : (j + 1) * ps]))
        return req.hashes[i]

    def _match(self, req: _RequestPages, context: TextContext) -> list[int]:
        """Pages holding the longest cached run of leading full blocks, leaving >= 1 token to compute.

        A request that wants its prompt's logprobs (echo) computes every prompt token: no match."""
        sp = context.sampling_params
        if not self.enable_prefix_caching or (sp.echo and sp.logprobs is not None):
            return []
        tokens = context.tokens
        matched: list[int] = []
        for i in range((len(tokens) - 1) // self.page_size):
            page = self.pool.lookup(self._block_hash(req, context, i))
            if page is None:
                break
            matched.append(page)
        return matched

    def prefix_match_length(self, context: TextContext) -> int:
        """Tokens the first alloc would take from the prefix cache (no side effects on the pool)."""
        req = self._get(context.request_id)
        if req.started:
            return context.num_computed_tokens
        return len(self._match(req, context)) * self.page_size

    # -- allocation -----------------------------------------------------------------------------
    def _plan(
        self, context: TextContext, num_steps: int, num_tokens: int | None
    ) -> tuple[_RequestPages, list[int], int]:
        """(request, pages to share, number of new pages) for alloc / can_alloc."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        req = self._get(context.request_id)
        target = len(context.tokens) + num_steps - 1 if num_tokens is None else num_tokens
        if target < 0 or target > len(context.tokens) + num_steps - 1:
            raise ValueError(
                f"cannot reserve KV pages for {target} tokens of a request with {len(context.tokens)} tokens"
            )
        shared: list[int] = []
        if not req.started:
            if context.num_computed_tokens != 0:
                raise KVCacheRequestError(
                    f"request {context.request_id} has computed tokens but no KV pages; reset it for recompute"
                )
            shared = self._match(req, context)
        have = len(req.pages) + len(shared)
        return req, shared, max(0, math.ceil(target / self.page_size) - have)

    def can_alloc(self, context: TextContext, num_steps: int = 1, num_tokens: int | None = None) -> bool:
        """Whether alloc() with the same arguments would succeed now."""
        _, shared, num_new = self._plan(context, num_steps, num_tokens)
        evicted_by_sharing = sum(self.pool.is_cached(p) for p in shared)
        return num_new <= self.pool.num_available - evicted_by_sharing

    def alloc(self, context: TextContext, num_steps: int = 1, num_tokens: int | None = None) -> None:
        """Ensure pages for the first `num_tokens` positions (default: len(tokens) + num_steps - 1).

        The first alloc after claim() shares cached leading full blocks and sets
        context.num_computed_tokens = context.num_cached_tokens to the tokens they hold.
        All-or-nothing: raises KVCacheOutOfBlocks without changing anything when pages run out.
        """
        req, shared, num_new = self._plan(context, num_steps, num_tokens)
        evicted_by_sharing = sum(self.pool.is_cached(p) for p in shared)
        if num_new > self.pool.num_available - evicted_by_sharing:
            raise KVCacheOutOfBlocks(
                f"request {context.request_id} needs {num_new} more KV pages, "
                f"{self.pool.num_available - evicted_by_sharing} available"
            )
        if not req.started:
            req.started = True
            for page in shared:
                self.pool.share(page)
            req.pages.extend(shared)
            req.num_registered = len(shared)
            cached = len(shared) * self.page_size
            context.num_computed_tokens = context.num_cached_tokens = cached
            if self.enable_prefix_caching:
                self.prefix_cache_queries += len(context.tokens)
                self.prefix_cache_hits += cached
        for _ in range(num_new):
            req.pages.append(self.pool.allocate())
        if shared or num_new:
            req.table_tensor = None

    def commit(self, context: TextContext) -> None:
        """After a forward: hash the full pages whose tokens are all computed so others can share them."""
        if not self.enable_prefix_caching:
            return
        req = self._get(context.request_id)
        num_full = min(context.num_computed_tokens // self.page_size, len(req.pages))
        for i in range(req.num_registered, num_full):
            self.pool.register_hash(req.pages[i], self._block_hash(req, context, i))
        req.num_registered = max(req.num_registered, num_full)

    def fetch(
        self, context_batch: "list[TextContext]", num_steps: int = 1, drafts: "dict[RequestID, list[int]] | None" = None
    ) -> StepInputs:
        """The KV-cache inputs of one forward over the batch (the seeds' `fetch`): packed token ids and
        positions of each context's next chunk (its scheduled tokens, else all not yet computed), slot
        mapping, page tables, lengths, and the logits rows to sample. A context in `drafts` is fed its last
        token and its drafted tokens, one logits row each. Pages must be allocated (alloc) first;
        `num_steps` is accepted for the seeds' signature (multi-step decode allocates, then fetches once)."""
        if not context_batch:  # an empty batch (architectures with supports_empty_batches step them)
            return empty_step_inputs(self.device)
        drafts = drafts or {}
        batch = [(c, 1 + len(drafts[c.request_id]) if c.request_id in drafts else c.next_chunk_length)
                 for c in context_batch]
        return build_step_inputs(self, batch, drafts=drafts)

    def step(self, context_batch: "list[TextContext]") -> None:
        """After a forward whose contexts have advanced num_computed_tokens (the seeds' `step`): commit
        each context's newly full pages to the prefix cache."""
        for context in context_batch:
            self.commit(context)

    def reset_prefix_cache(self) -> None:
        """Forget all cached prefixes; pages of live requests stay theirs but are no longer shared."""
        self.pool.reset_prefix_cache()
        for req in self._requests.values():
            req.num_registered = 0  # the next commit re-registers their full pages

    # -- addressing -----------------------------------------------------------------------------
    def block_table(self, request_id: RequestID) -> list[int]:
        return list(self._get(request_id).pages)

    def block_table_tensor(self, request_id: RequestID) -> torch.Tensor:
        """The page table as a CPU int32 tensor; cached until the request gets new pages."""
        req = self._get(request_id)
        if req.table_tensor is None:
            req.table_tensor = torch.tensor(req.pages, dtype=torch.int32)
        return req.table_tensor

    def slot(self, request_id: RequestID, position: int) -> int:
        """Flat cache slot (page * page_size + offset) holding token `position`'s K/V."""
        pages = self._get(request_id).pages
        page_index, offset = divmod(position, self.page_size)
        if position < 0 or page_index >= len(pages):
            raise ValueError(f"position {position} of request {request_id} has no KV page allocated")
        return pages[page_index] * self.page_size + offset

    def check_invariants(self) -> None:
        """Pool invariants, plus: each page's ref count equals the number of live tables holding it."""
        self.pool.check_invariants()
        counts = [0] * self.total_num_pages
        for rid, req in self._requests.items():
            assert len(set(req.pages)) == len(req.pages), f"request {rid} holds a page twice"
            for page in req.pages:
                counts[page] += 1
        for page, n in enumerate(counts):
            assert self.pool.ref_count(page) == n, f"page {page}: ref count {self.pool.ref_count(page)} != {n} owners"


__all__ = [
    "KVCacheOutOfBlocks",
    "KVCacheParams",
    "KVCacheRequestError",
    "PagedKVCacheManager",
    "estimate_num_blocks",
]
