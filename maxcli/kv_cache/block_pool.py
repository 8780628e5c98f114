"""Physical KV pages: free list, reference counts and the prefix-cache index.

Every block id in [0, num_blocks) is in exactly one of three states:
- free:   ref_count 0, no hash; in `_free` (FIFO).
- cached: ref_count 0, hashed; in `_cached_lru` (oldest first) and findable through `_hash_to_block`.
          Its K/V stay valid until allocate() needs the slot, then its hash is dropped (eviction).
- used:   ref_count > 0; hashed or not. A hashed used block is shared by every request whose
          prefix matched it.
So num_free + num_cached + num_used == num_blocks at all times; check_invariants() verifies it.
All operations are O(1) except reset_prefix_cache() and check_invariants() (O(num_blocks)).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Sequence

BlockHash = int


class KVCacheOutOfBlocks(RuntimeError):
    """No free or evictable page is left; the caller should preempt a request or wait."""


def hash_block_tokens(parent_hash: BlockHash | None, token_ids: Sequence[int]) -> BlockHash:
    """Chained hash of one full block: equal hashes mean equal token prefixes up to and including it.

    Python's hash of a tuple of ints is deterministic across processes (no PYTHONHASHSEED salt);
    a 64-bit collision is the only way two different prefixes could share pages.
    """
    return hash((parent_hash, tuple(token_ids)))


class BlockPool:
    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._ref_counts = [0] * num_blocks
        self._block_hash: list[BlockHash | None] = [None] * num_blocks
        self._hash_to_block: dict[BlockHash, int] = {}
        self._free: deque[int] = deque(range(num_blocks))
        self._cached_lru: OrderedDict[int, None] = OrderedDict()
        self._num_used = 0

    # -- counts ---------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks holding nothing."""
        return len(self._free)

    @property
    def num_cached(self) -> int:
        """Unreferenced blocks kept for prefix reuse (evicted on demand)."""
        return len(self._cached_lru)

    @property
    def num_used(self) -> int:
        """Blocks referenced by at least one request."""
        return self._num_used

    @property
    def num_available(self) -> int:
        """Blocks allocate() can hand out: free ones plus evictable cached ones."""
        return len(self._free) + len(self._cached_lru)

    def ref_count(self, block: int) -> int:
        return self._ref_counts[block]

    def block_hash(self, block: int) -> BlockHash | None:
        return self._block_hash[block]

    # -- allocation -----------------------------------------------------------------------------
    def allocate(self) -> int:
        """A block with ref_count 1 and no hash: a free one, else the least recently used cached one."""
        if self._free:
            block = self._free.popleft()
        elif self._cached_lru:
            block, _ = self._cached_lru.popitem(last=False)
            self._drop_hash(block)
        else:
            raise KVCacheOutOfBlocks(f"all {self.num_blocks} KV cache pages are in use")
        self._ref_counts[block] = 1
        self._num_used += 1
        return block

    def lookup(self, block_hash: BlockHash) -> int | None:
        """The block holding this hash (used or cached), or None."""
        return self._hash_to_block.get(block_hash)

    def is_cached(self, block: int) -> bool:
        """True when the block is unreferenced but kept for reuse (sharing it consumes one available page)."""
        return block in self._cached_lru

    def share(self, block: int) -> None:
        """Add a reference to a hashed block found by lookup(); a cached block leaves the LRU."""
        if self._block_hash[block] is None:
            raise ValueError(f"block {block} has no hash and cannot be shared")
        if self._ref_counts[block] == 0:
            del self._cached_lru[block]
            self._num_used += 1
        self._ref_counts[block] += 1

    def release(self, block: int) -> None:
        """Drop one reference; at zero a hashed block becomes cached (most recently used), else free."""
        rc = self._ref_counts[block]
        if rc <= 0:
            raise ValueError(f"block {block} released more times than it was referenced")
        self._ref_counts[block] = rc - 1
        if rc == 1:
            self._num_used -= 1
            if self._block_hash[block] is None:
                self._free.append(block)
            else:
                self._cached_lru[block] = None

    def register_hash(self, block: int, block_hash: BlockHash) -> bool:
        """Make a used, full block findable by its content hash.

        Returns False (and leaves the block unhashed) when another block already holds that content:
        two requests computed the same prefix concurrently; the first one stays the shared copy.
        """
        if self._ref_counts[block] <= 0:
            raise ValueError(f"block {block} is not in use and cannot be registered")
        current = self._block_hash[block]
        if current is not None:
            if current != block_hash:
                raise ValueError(f"block {block} already holds a different hash")
            return True
        if block_hash in self._hash_to_block:
            return False
        self._block_hash[block] = block_hash
        self._hash_to_block[block_hash] = block
        return True

    def reset_prefix_cache(self) -> None:
        """Forget every hash: cached blocks become free; used blocks stay owned but are no longer shared."""
        while self._cached_lru:
            block, _ = self._cached_lru.popitem(last=False)
            self._drop_hash(block)
            self._free.append(block)
        for block in list(self._hash_to_block.values()):
            self._drop_hash(block)

    def _drop_hash(self, block: int) -> None:
        h = self._block_hash[block]
        if h is not None:
            del self._hash_to_block[h]
            self._block_hash[block] = None

    # -- checking -------------------------------------------------------------------------------
    def check_invariants(self) -> None:
        """Raise AssertionError if any block is in two states or none, or the hash index disagrees."""
        free, cached = set(self._free), set(self._cached_lru)
        assert len(free) == len(self._free), "a block appears twice in the free list"
        assert not (free & cached), "a block is both free and cached"
        used = {b for b, rc in enumerate(self._ref_counts) if rc > 0}
        assert all(rc >= 0 for rc in self._ref_counts), "negative reference count"
        assert not (used & (free | cached)), "a referenced block is on a free/cached list"
        assert len(used) == self._num_used, "used-block counter is out of sync"
        assert len(free) + len(cached) + len(used) == self.num_blocks, "a block was lost"
        for b in free:
            assert self._block_hash[b] is None, f"free block {b} still has a hash"
        for b in cached:
            assert self._block_hash[b] is not None, f"cached block {b} has no hash"
        for h, b in self._hash_to_block.items():
            assert self._block_hash[b] == h, f"hash index points at block {b} holding another hash"
        num_hashed = sum(h is not None for h in self._block_hash)
        assert num_hashed == len(self._hash_to_block), "a hashed block is missing from the index"
