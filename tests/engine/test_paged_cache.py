"""PagedKVCacheManager: page accounting, prefix sharing, LRU reuse, metrics, errors."""

from __future__ import annotations

import pytest
import torch

from maxcli.kv_cache import (
    KVCacheOutOfBlocks,
    KVCacheParams,
    KVCacheRequestError,
    PagedKVCacheManager,
    estimate_num_blocks,
)

from .helpers import make_ctx, make_kv


def run_prefill(kv: PagedKVCacheManager, ctx) -> None:  # type: ignore[no-untyped-def]
    """What the engine does around one full-prompt forward: alloc, (forward), advance, commit."""
    kv.alloc(ctx)
    ctx.num_computed_tokens = len(ctx.tokens)
    kv.commit(ctx)


def test_cache_tensor_layout_and_views() -> None:
    params = KVCacheParams(dtype=torch.float16, num_layers=3, n_kv_heads=2, head_dim=8, page_size=4)
    kv = PagedKVCacheManager(params, num_blocks=5)
    assert kv.kv_cache.shape == (3, 2, 5, 4, 2, 8) and kv.kv_cache.dtype == torch.float16
    k, v = kv.layer_caches(1)
    assert k.shape == (5, 4, 2, 8) and k.is_contiguous() and v.is_contiguous()
    v[2, 1] = 7.0
    assert kv.kv_cache[1, 1, 2, 1].eq(7.0).all()
    assert params.bytes_per_page == 3 * 2 * 4 * 2 * 8 * 2
    assert estimate_num_blocks(params, params.bytes_per_page * 10 + 5) == 10
    with pytest.raises(ValueError, match="page_size"):
        KVCacheParams(dtype=torch.float32, num_layers=1, n_kv_heads=1, head_dim=1, page_size=0)


def test_alloc_covers_tokens_plus_steps() -> None:
    kv = make_kv(num_blocks=8, page_size=4)
    ctx = make_ctx(range(5))
    kv.claim(ctx.request_id)
    kv.alloc(ctx)
    assert len(kv.block_table(ctx.request_id)) == 2
    kv.alloc(ctx, num_steps=4)  # 5 + 3 = 8 positions: still 2 pages
    assert len(kv.block_table(ctx.request_id)) == 2
    kv.alloc(ctx, num_steps=5)
    assert len(kv.block_table(ctx.request_id)) == 3
    pages = kv.block_table(ctx.request_id)
    assert kv.slot(ctx.request_id, 6) == pages[1] * 4 + 2
    with pytest.raises(ValueError, match="no KV page"):
        kv.slot(ctx.request_id, 12)
    assert kv.num_used_blocks == 3 and kv.num_free_blocks == 5
    kv.release(ctx.request_id)
    assert kv.num_free_blocks == 8 and not kv.contains(ctx.request_id)
    kv.check_invariants()


def test_request_state_errors() -> None:
    kv = make_kv(num_blocks=4)
    ctx = make_ctx([1, 2, 3])
    with pytest.raises(KVCacheRequestError, match="not claimed"):
        kv.alloc(ctx)
    kv.claim(ctx.request_id)
    with pytest.raises(KVCacheRequestError, match="already claimed"):
        kv.claim(ctx.request_id)
    with pytest.raises(ValueError, match="num_steps"):
        kv.alloc(ctx, num_steps=0)
    kv.release(ctx.request_id)
    kv.release(ctx.request_id)  # idempotent


def test_out_of_blocks_changes_nothing() -> None:
    kv = make_kv(num_blocks=3, page_size=4)
    a = make_ctx(range(8), "a")
    kv.claim(a.request_id)
    run_prefill(kv, a)
    b = make_ctx(range(100, 109), "b")  # 3 pages, 1 available
    kv.claim(b.request_id)
    assert not kv.can_alloc(b)
    with pytest.raises(KVCacheOutOfBlocks, match="needs 3 more KV pages, 1 available"):
        kv.alloc(b)
    assert kv.block_table(b.request_id) == [] and b.num_computed_tokens == 0
    assert kv.can_alloc(b, num_tokens=4)
    kv.alloc(b, num_tokens=4)  # a chunk needs fewer pages
    assert len(kv.block_table(b.request_id)) == 1
    kv.check_invariants()


def test_shared_prefix_reuses_full_pages() -> None:
    kv = make_kv(num_blocks=16, page_size=4)
    a = make_ctx(list(range(13)), "a")  # 3 full pages + 1 token
    kv.claim(a.request_id)
    run_prefill(kv, a)
    b = make_ctx(list(range(8)) + [99, 98, 97], "b")  # shares 2 full pages
    kv.claim(b.request_id)
    assert kv.prefix_match_length(b) == 8
    kv.alloc(b)
    assert b.num_computed_tokens == b.num_cached_tokens == 8
    pa, pb = kv.block_table(a.request_id), kv.block_table(b.request_id)
    assert pb[:2] == pa[:2] and pb[2] not in pa
    assert kv.pool.ref_count(pa[0]) == 2
    assert kv.prefix_cache_queries == 13 + 11 and kv.prefix_cache_hits == 8
    assert kv.prefix_cache_hit_rate == pytest.approx(8 / 24)
    kv.check_invariants()


def test_last_token_is_never_served_from_cache() -> None:
    kv = make_kv(num_blocks=16, page_size=4)
    a = make_ctx(list(range(12)), "a")
    kv.claim(a.request_id)
    run_prefill(kv, a)
    same = make_ctx(list(range(12)), "same")  # identical prompt of exactly 3 pages
    kv.claim(same.request_id)
    kv.alloc(same)
    assert same.num_computed_tokens == 8  # page 3 is recomputed so the last token's logits exist
    assert same.active_length == 4
    assert kv.block_table(same.request_id)[2] != kv.block_table(a.request_id)[2]


def test_no_sharing_when_prefix_caching_is_off() -> None:
    kv = make_kv(num_blocks=16, page_size=4, prefix_caching=False)
    a = make_ctx(list(range(13)), "a")
    kv.claim(a.request_id)
    run_prefill(kv, a)
    b = make_ctx(list(range(13)), "b")
    kv.claim(b.request_id)
    kv.alloc(b)
    assert b.num_computed_tokens == 0
    assert not set(kv.block_table(a.request_id)) & set(kv.block_table(b.request_id))
    assert kv.prefix_cache_queries == 0 and kv.num_cached_blocks == 0
    kv.release(a.request_id)
    assert kv.num_free_blocks == 12  # nothing is kept for reuse
    kv.check_invariants()


def test_released_prefix_is_found_until_evicted_tail_first() -> None:
    kv = make_kv(num_blocks=5, page_size=4)
    a = make_ctx(list(range(12)) + [50], "a")  # pages: 3 full + 1 partial
    kv.claim(a.request_id)
    run_prefill(kv, a)
    pages_a = kv.block_table(a.request_id)
    kv.release(a.request_id)
    assert (kv.num_cached_blocks, kv.num_free_blocks, kv.num_used_blocks) == (3, 2, 0)
    # A newcomer needing 3 pages takes the 2 free ones, then evicts a's LAST full page (released first).
    filler = make_ctx(list(range(500, 512)), "filler")
    kv.claim(filler.request_id)
    run_prefill(kv, filler)
    assert pages_a[2] in kv.block_table(filler.request_id)
    again = make_ctx(list(range(12)) + [60, 61], "again")
    kv.claim(again.request_id)
    assert kv.prefix_match_length(again) == 8
    kv.release(filler.request_id)
    kv.alloc(again)
    assert kv.block_table(again.request_id)[:2] == pages_a[:2]
    kv.check_invariants()


def test_can_alloc_counts_cached_pages_taken_by_sharing() -> None:
    kv = make_kv(num_blocks=4, page_size=4)
    a = make_ctx(list(range(12)), "a")
    kv.claim(a.request_id)
    run_prefill(kv, a)
    kv.release(a.request_id)  # 3 cached pages, 1 free
    b = make_ctx(list(range(12)) + [1, 2, 3, 4, 5], "b")  # shares 3 pages, needs 2 more: only 1 left
    kv.claim(b.request_id)
    assert kv.num_available_blocks == 4
    assert not kv.can_alloc(b)
    with pytest.raises(KVCacheOutOfBlocks):
        kv.alloc(b)
    assert kv.can_alloc(b, num_tokens=13)
    kv.alloc(b, num_tokens=13)
    assert b.num_computed_tokens == 12
    kv.check_invariants()


def test_commit_during_decode_and_reset_prefix_cache() -> None:
    kv = make_kv(num_blocks=8, page_size=4)
    a = make_ctx([1, 2, 3], "a")
    kv.claim(a.request_id)
    run_prefill(kv, a)
    for tok in (4, 5, 6):  # decode steps fill page 0 and start page 1
        a.append_token(tok)
        kv.alloc(a)
        a.num_computed_tokens += 1
        kv.commit(a)
    assert kv.pool.block_hash(kv.block_table(a.request_id)[0]) is not None
    assert kv.pool.block_hash(kv.block_table(a.request_id)[1]) is None  # not full yet
    b = make_ctx([1, 2, 3, 4, 9], "b")
    kv.claim(b.request_id)
    assert kv.prefix_match_length(b) == 4
    kv.reset_prefix_cache()
    assert kv.prefix_match_length(b) == 0
    kv.commit(a)  # re-registers a's full page
    assert kv.prefix_match_length(b) == 4
    kv.check_invariants()
