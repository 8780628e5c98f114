"""BlockPool: reference counts, hash index, LRU reuse of freed hashed blocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxcli.kv_cache import BlockPool, KVCacheOutOfBlocks, hash_block_tokens


def test_allocate_until_empty_then_error() -> None:
    pool = BlockPool(3)
    blocks = [pool.allocate() for _ in range(3)]
    assert sorted(blocks) == [0, 1, 2]
    assert (pool.num_free, pool.num_used, pool.num_cached) == (0, 3, 0)
    with pytest.raises(KVCacheOutOfBlocks, match="all 3 KV cache pages"):
        pool.allocate()
    pool.release(blocks[1])
    assert pool.allocate() == blocks[1]
    pool.check_invariants()


def test_shared_block_needs_every_reference_released() -> None:
    pool = BlockPool(2)
    b = pool.allocate()
    h = hash_block_tokens(None, [1, 2])
    assert pool.register_hash(b, h)
    pool.share(b)
    assert pool.ref_count(b) == 2
    pool.release(b)
    assert pool.num_used == 1 and pool.lookup(h) == b
    pool.release(b)
    assert (pool.num_used, pool.num_cached, pool.num_free) == (0, 1, 1)
    with pytest.raises(ValueError, match="released more times"):
        pool.release(b)
    pool.check_invariants()


def test_duplicate_content_keeps_first_copy() -> None:
    pool = BlockPool(2)
    a, b = pool.allocate(), pool.allocate()
    h = hash_block_tokens(None, [5, 6])
    assert pool.register_hash(a, h)
    assert not pool.register_hash(b, h)
    assert pool.lookup(h) == a and pool.block_hash(b) is None
    pool.release(b)
    assert pool.num_free == 1  # unhashed: straight to the free list
    pool.check_invariants()


def test_chained_hash_depends_on_parent() -> None:
    h1 = hash_block_tokens(None, [1, 2])
    assert hash_block_tokens(h1, [3, 4]) != hash_block_tokens(None, [3, 4])
    assert hash_block_tokens(h1, [3, 4]) == hash_block_tokens(hash_block_tokens(None, (1, 2)), (3, 4))


def test_lru_evicts_oldest_cached_and_prefers_free() -> None:
    pool = BlockPool(4)
    blocks = [pool.allocate() for _ in range(3)]
    hashes = [hash_block_tokens(None, [i]) for i in range(3)]
    for b, h in zip(blocks, hashes):
        pool.register_hash(b, h)
    for b in blocks:  # released in order: blocks[0] is least recently used
        pool.release(b)
    assert pool.num_cached == 3 and pool.num_free == 1
    fresh = pool.allocate()
    assert fresh not in blocks  # the free block goes first; all cached prefixes survive
    assert all(pool.lookup(h) is not None for h in hashes)
    evicted = pool.allocate()
    assert evicted == blocks[0] and pool.lookup(hashes[0]) is None
    assert pool.lookup(hashes[1]) == blocks[1]
    pool.share(blocks[1])  # reuse takes it off the LRU
    assert pool.allocate() == blocks[2]
    with pytest.raises(KVCacheOutOfBlocks):
        pool.allocate()
    pool.check_invariants()


def test_reset_prefix_cache_frees_cached_and_unhashes_used() -> None:
    pool = BlockPool(3)
    a, b = pool.allocate(), pool.allocate()
    pool.register_hash(a, 11)
    pool.register_hash(b, 22)
    pool.release(a)
    pool.reset_prefix_cache()
    assert pool.lookup(11) is None and pool.lookup(22) is None
    assert (pool.num_free, pool.num_cached, pool.num_used) == (2, 0, 1)
    pool.check_invariants()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        BlockPool(0)
    pool = BlockPool(1)
    with pytest.raises(ValueError, match="not in use"):
        pool.register_hash(0, 1)
    b = pool.allocate()
    with pytest.raises(ValueError, match="no hash"):
        pool.share(b)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["alloc", "release", "hash", "share", "reset"]), st.integers(0, 50)), max_size=80
    )
)
def test_random_operations_keep_invariants(ops: list[tuple[str, int]]) -> None:
    pool = BlockPool(6)
    held: list[int] = []  # one entry per reference we own
    for op, arg in ops:
        if op == "alloc":
            if pool.num_available:
                held.append(pool.allocate())
            else:
                with pytest.raises(KVCacheOutOfBlocks):
                    pool.allocate()
        elif op == "release" and held:
            pool.release(held.pop(arg % len(held)))
        elif op == "hash" and held:
            block = held[arg % len(held)]
            if pool.block_hash(block) is None:
                pool.register_hash(block, arg % 7)
        elif op == "share":
            b = pool.lookup(arg % 7)
            if b is not None:
                pool.share(b)
                held.append(b)
        elif op == "reset":
            pool.reset_prefix_cache()
        pool.check_invariants()
        assert pool.num_used == len(set(held))
    for b in held:
        pool.release(b)
    pool.check_invariants()
    assert pool.num_used == 0 and pool.num_free + pool.num_cached == 6
