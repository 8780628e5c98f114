"""build_step_inputs: packed ids/positions and attention metadata, checked against paged attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from maxcli import ops
from maxcli.kv_cache import KVCacheParams, PagedKVCacheManager, build_step_inputs

from .helpers import make_ctx, make_kv


def test_metadata_of_a_mixed_batch() -> None:
    kv = make_kv(num_blocks=16, page_size=4)
    dec = make_ctx(list(range(6)), "dec")  # decoding: 5 computed, 1 new
    chunk = make_ctx(list(range(100, 110)), "chunk")  # prefill chunk of 4 out of 10
    full = make_ctx([7, 8, 9], "full")  # whole prompt
    for ctx in (dec, chunk, full):
        kv.claim(ctx.request_id)
    kv.alloc(dec)
    dec.num_computed_tokens = 5
    kv.alloc(chunk, num_tokens=4)
    kv.alloc(full)
    step = build_step_inputs(kv, [(dec, 1), (chunk, 4), (full, 3)])
    assert step.input_ids.tolist() == [5, 100, 101, 102, 103, 7, 8, 9]
    assert step.positions.tolist() == [5, 0, 1, 2, 3, 0, 1, 2]
    meta = step.attention
    expected_slots = [kv.slot(dec.request_id, 5)] + [kv.slot(chunk.request_id, p) for p in range(4)]
    expected_slots += [kv.slot(full.request_id, p) for p in range(3)]
    assert meta.slot_mapping.tolist() == expected_slots
    assert meta.cu_seqlens_q.tolist() == [0, 1, 5, 8] and meta.cu_seqlens_q.dtype == torch.int32
    assert meta.seq_lens_k.tolist() == [6, 4, 3]
    assert (meta.max_seqlen_q, meta.max_seqlen_k, meta.is_decode) == (4, 6, False)
    assert meta.block_tables.dtype == torch.int32 and meta.block_tables.shape == (3, 2)
    assert meta.block_tables[2].tolist() == kv.block_table(full.request_id) + [0]
    # The chunk stops short of its prompt's end, so only dec and full need logits.
    assert meta.logits_indices.tolist() == [0, 7]
    assert step.sample_contexts == [dec, full]


def test_pure_decode_batch_and_errors() -> None:
    kv = make_kv(num_blocks=8, page_size=2)
    a, b = make_ctx([1, 2, 3], "a"), make_ctx([4, 5], "b")
    for ctx in (a, b):
        kv.claim(ctx.request_id)
        kv.alloc(ctx)
        ctx.num_computed_tokens = len(ctx.tokens) - 1
    step = build_step_inputs(kv, [(a, 1), (b, 1)])
    assert step.attention.is_decode and step.positions.tolist() == [2, 1]
    assert step.attention.logits_indices.tolist() == [0, 1]
    with pytest.raises(ValueError, match="cannot feed 2 tokens"):
        build_step_inputs(kv, [(a, 2)])
    with pytest.raises(ValueError, match="empty batch"):
        build_step_inputs(kv, [])
    c = make_ctx([1, 2, 3, 4, 5], "c")
    kv.claim(c.request_id)
    kv.alloc(c, num_tokens=2)
    with pytest.raises(ValueError, match="KV pages cover 2 of 5"):
        build_step_inputs(kv, [(c, 5)])


def test_chunked_paged_attention_matches_dense_causal_attention() -> None:
    """Feed two sequences in uneven chunks through the metadata; the last chunk's attention output must
    equal dense causal attention over each full sequence, so slots, tables and lengths all agree."""
    torch.manual_seed(0)
    H, Hk, D, ps = 4, 2, 8, 4
    params = KVCacheParams(dtype=torch.float32, num_layers=1, n_kv_heads=Hk, head_dim=D, page_size=ps)
    kv = PagedKVCacheManager(params, num_blocks=12)
    lengths = {"s0": 11, "s1": 6}
    ctxs = {rid: make_ctx(list(range(n)), rid) for rid, n in lengths.items()}
    q_all = {rid: torch.randn(n, H, D) for rid, n in lengths.items()}
    k_all = {rid: torch.randn(n, Hk, D) for rid, n in lengths.items()}
    v_all = {rid: torch.randn(n, Hk, D) for rid, n in lengths.items()}
    for ctx in ctxs.values():
        kv.claim(ctx.request_id)
    k_cache, v_cache = kv.layer_caches(0)
    chunks = [{"s0": 5, "s1": 2}, {"s0": 3, "s1": 3}, {"s0": 3, "s1": 1}]
    for plan in chunks:
        batch = []
        for rid, n in plan.items():
            ctx = ctxs[rid]
            kv.alloc(ctx, num_tokens=ctx.num_computed_tokens + n)
            batch.append((ctx, n))
        step = build_step_inputs(kv, batch)
        sl = [(c.num_computed_tokens, c.num_computed_tokens + n) for c, n in batch]
        q = torch.cat([q_all[c.request_id][a:b] for (c, _), (a, b) in zip(batch, sl)])
        k = torch.cat([k_all[c.request_id][a:b] for (c, _), (a, b) in zip(batch, sl)])
        v = torch.cat([v_all[c.request_id][a:b] for (c, _), (a, b) in zip(batch, sl)])
        meta = step.attention
        ops.store_kvcache(k, v, k_cache, v_cache, meta.slot_mapping)
        out = ops.paged_attention(
            q, k_cache, v_cache, meta.block_tables, meta.cu_seqlens_q, meta.seq_lens_k,
            meta.max_seqlen_q, meta.max_seqlen_k, scale=D**-0.5,
        )
        for ctx, n in batch:
            ctx.num_computed_tokens += n
    # `out` holds the last chunk of each sequence: compare with dense attention over the whole sequence.
    offset = 0
    for ctx, n in batch:
        rid = ctx.request_id
        L = lengths[rid]
        qd = q_all[rid].permute(1, 0, 2)
        kd = k_all[rid].repeat_interleave(H // Hk, dim=1).permute(1, 0, 2)
        vd = v_all[rid].repeat_interleave(H // Hk, dim=1).permute(1, 0, 2)
        dense = F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, scale=D**-0.5).permute(1, 0, 2)
        torch.testing.assert_close(out[offset : offset + n], dense[L - n :], rtol=1e-5, atol=1e-5)
        offset += n
