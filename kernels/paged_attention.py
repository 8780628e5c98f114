"""Paged causal attention over the engine's block tables; contract of `torch_ref.paged_attention`.

Two kernels share one inner loop:
- `_prefill_kernel`: grid (query tiles, B, H). A program takes BLOCK_M new tokens of one head and streams
  that sequence's keys in BLOCK_N tiles (online softmax, base-2 exponent). Serves mixed batches too.
- `_decode_kernel` (+ `_reduce_kernel`): every sequence has <= 1 new token. A program takes the G query
  heads that share one KV head (GQA packing: K/V are read once per group) over one split of the keys
  (flash-decoding); with several splits each writes its unnormalized partial output, running max and sum,
  and the reduce kernel merges them. Splits keep a GPU busy when B * Hk is small and contexts are long.

Keys are gathered token by token through block_tables, so a tile may straddle pages and caches may be
strided views ([num_blocks, block_size, Hk, D] with any strides). Masked logits are -inf while running
maxima start at a finite -1e30, so a fully masked tile contributes exp2(-inf) = 0 and never NaN.
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

from maxcli.kernels.common import check_float, dot_dtype, dot_precision, interpreting, next_pow2, tanh

LOG2E = tl.constexpr(1.4426950408889634)
NEG_BIG = tl.constexpr(-1.0e30)  # finite start for running maxima (see module doc)
MIN_KEYS_PER_SPLIT = 256  # a split shorter than this costs more in the reduce than it saves
MAX_SPLITS = 16


@triton.jit
def _attend_tile(
    q, m_i, l_i, acc, k_ptr, v_ptr, bt_row_ptr, kpos, key_ok, q_pos, offs_d, d_ok,
    kvh, page_size, sk_b, sk_s, sk_h, sk_d, sv_b, sv_s, sv_h, sv_d,
    scale, softcap, window,
    HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr, DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    """One online-softmax step of rows q [R, D] over the keys at positions kpos [N]."""
    page = tl.load(bt_row_ptr + kpos // page_size, mask=key_ok, other=0).to(tl.int64)
    in_page = (kpos % page_size).to(tl.int64)
    kv_mask = key_ok[:, None] & d_ok[None, :]
    k = tl.load(
        k_ptr + page[:, None] * sk_b + in_page[:, None] * sk_s + kvh * sk_h + offs_d[None, :] * sk_d,
        mask=kv_mask, other=0.0,
    ).to(DOT_DTYPE)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION)
    if HAS_SOFTCAP:
        s = softcap * tanh(s * (scale / softcap)) * LOG2E
    else:
        s = s * (scale * LOG2E)
    visible = key_ok[None, :] & (kpos[None, :] <= q_pos[:, None])
    if HAS_WINDOW:
        visible = visible & (kpos[None, :] > q_pos[:, None] - window)
    s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    v = tl.load(
        v_ptr + page[:, None] * sv_b + in_page[:, None] * sv_s + kvh * sv_h + offs_d[None, :] * sv_d,
        mask=kv_mask, other=0.0,
    ).to(DOT_DTYPE)
    acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v, input_precision=PRECISION)
    return m_new, l_i * alpha + tl.sum(p, 1), acc


@triton.jit
def _prefill_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, bt_ptr, cu_q_ptr, seq_k_ptr,
    sq_t, sq_h, sq_d, sk_b, sk_s, sk_h, sk_d, sv_b, sv_s, sv_h, sv_d, so_t, so_h, so_d, s_bt,
    page_size, scale, softcap, window,
    G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    tile = tl.program_id(0)
    b = tl.program_id(1)
    h = tl.program_id(2)
    q_start = tl.load(cu_q_ptr + b)
    q_len = tl.load(cu_q_ptr + b + 1) - q_start
    if tile * BLOCK_M >= q_len:
        return
    kv_len = tl.load(seq_k_ptr + b)
    ctx = kv_len - q_len  # tokens already cached before this step
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = offs_m < q_len
    d_ok = offs_d < HEAD_DIM
    q_pos = ctx + offs_m
    rows = (q_start + offs_m).to(tl.int64)
    q = tl.load(
        q_ptr + rows[:, None] * sq_t + h * sq_h + offs_d[None, :] * sq_d,
        mask=row_ok[:, None] & d_ok[None, :], other=0.0,
    ).to(DOT_DTYPE)
    kvh = h // G
    hi = tl.minimum(kv_len, ctx + tl.minimum((tile + 1) * BLOCK_M, q_len))  # last row's position + 1
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(0, ctx + tile * BLOCK_M - window + 1)
    m_i = tl.full([BLOCK_M], NEG_BIG, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    for start in range(lo, hi, BLOCK_N):
        kpos = start + tl.arange(0, BLOCK_N)
        m_i, l_i, acc = _attend_tile(
            q, m_i, l_i, acc, k_ptr, v_ptr, bt_ptr + b * s_bt, kpos, kpos < hi, q_pos, offs_d, d_ok,
            kvh, page_size, sk_b, sk_s, sk_h, sk_d, sv_b, sv_s, sv_h, sv_d, scale, softcap, window,
            HAS_WINDOW, HAS_SOFTCAP, DOT_DTYPE, PRECISION,
        )
    acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
    tl.store(
        o_ptr + rows[:, None] * so_t + h * so_h + offs_d[None, :] * so_d,
        acc.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :],
    )


@triton.jit
def _decode_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, part_o_ptr, part_ml_ptr, bt_ptr, cu_q_ptr, seq_k_ptr,
    sq_t, sq_h, sq_d, sk_b, sk_s, sk_h, sk_d, sv_b, sv_s, sv_h, sv_d, so_t, so_h, so_d, s_bt,
    page_size, scale, softcap, window, num_splits,
    G: tl.constexpr, BLOCK_G: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr, SPLIT: tl.constexpr, HAS_WINDOW: tl.constexpr, HAS_SOFTCAP: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    b = tl.program_id(0)
    kvh = tl.program_id(1)
    split = tl.program_id(2)
    t = tl.load(cu_q_ptr + b)
    if tl.load(cu_q_ptr + b + 1) == t:
        return  # no new token for this sequence
    kv_len = tl.load(seq_k_ptr + b)
    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    g_ok = offs_g < G
    d_ok = offs_d < HEAD_DIM
    heads = kvh * G + offs_g
    q = tl.load(
        q_ptr + t.to(tl.int64) * sq_t + heads[:, None] * sq_h + offs_d[None, :] * sq_d,
        mask=g_ok[:, None] & d_ok[None, :], other=0.0,
    ).to(DOT_DTYPE)
    q_pos = tl.zeros([BLOCK_G], tl.int32) + (kv_len - 1)
    lo = 0
    if HAS_WINDOW:
        lo = tl.maximum(0, kv_len - window)
    tiles_per_split = tl.cdiv(tl.cdiv(kv_len - lo, BLOCK_N), num_splits)
    start = lo + split * tiles_per_split * BLOCK_N
    end = tl.minimum(kv_len, start + tiles_per_split * BLOCK_N)
    m_i = tl.full([BLOCK_G], NEG_BIG, tl.float32)
    l_i = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    for tile_start in range(start, end, BLOCK_N):
        kpos = tile_start + tl.arange(0, BLOCK_N)
        m_i, l_i, acc = _attend_tile(
            q, m_i, l_i, acc, k_ptr, v_ptr, bt_ptr + b * s_bt, kpos, kpos < end, q_pos, offs_d, d_ok,
            kvh, page_size, sk_b, sk_s, sk_h, sk_d, sv_b, sv_s, sv_h, sv_d, scale, softcap, window,
            HAS_WINDOW, HAS_SOFTCAP, DOT_DTYPE, PRECISION,
        )
    out_mask = g_ok[:, None] & d_ok[None, :]
    if SPLIT:
        # Partial results, laid out [B, H, num_splits, BLOCK_D] and [B, H, num_splits, 2] (max, sum).
        slot = (b * G * tl.num_programs(1) + heads) * num_splits + split
        tl.store(part_o_ptr + slot[:, None] * BLOCK_D + offs_d[None, :], acc, mask=out_mask)
        tl.store(part_ml_ptr + slot * 2, m_i, mask=g_ok)
        tl.store(part_ml_ptr + slot * 2 + 1, l_i, mask=g_ok)
    else:
        acc = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(
            o_ptr + t.to(tl.int64) * so_t + heads[:, None] * so_h + offs_d[None, :] * so_d,
            acc.to(o_ptr.dtype.element_ty), mask=out_mask,
        )


@triton.jit
def _reduce_kernel(
    o_ptr, part_o_ptr, part_ml_ptr, cu_q_ptr, so_t, so_h, so_d, num_splits,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_S: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    t = tl.load(cu_q_ptr + b)
    if tl.load(cu_q_ptr + b + 1) == t:
        return
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_ok = offs_s < num_splits
    slot = (b * tl.num_programs(1) + h) * num_splits + offs_s
    m = tl.load(part_ml_ptr + slot * 2, mask=s_ok, other=NEG_BIG)
    l = tl.load(part_ml_ptr + slot * 2 + 1, mask=s_ok, other=0.0)
    part = tl.load(part_o_ptr + slot[:, None] * BLOCK_D + offs_d[None, :], mask=s_ok[:, None], other=0.0)
    w = tl.exp2(m - tl.max(m, 0))  # an empty split has m = -1e30, so its weight is 0
    out = tl.sum(part * w[:, None], 0) / tl.sum(l * w, 0)
    tl.store(o_ptr + t.to(tl.int64) * so_t + h * so_h + offs_d * so_d, out.to(o_ptr.dtype.element_ty),
             mask=offs_d < HEAD_DIM)


def _check(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
           cu_seqlens_q: torch.Tensor, seq_lens_k: torch.Tensor) -> None:
    if q.dim() != 3 or k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"paged_attention wants q [T, H, D] and caches [num_blocks, block_size, Hk, D]; got q "
            f"{tuple(q.shape)}, k_cache {tuple(k_cache.shape)}, v_cache {tuple(v_cache.shape)}"
        )
    H, D, Hk = q.shape[1], q.shape[2], k_cache.shape[2]
    if k_cache.shape[3] != D or H % Hk:
        raise ValueError(f"paged_attention: q heads {H} x dim {D} do not fit cache heads {Hk} x dim {k_cache.shape[3]}")
    if D < 16:
        raise ValueError(f"paged_attention kernel needs head_dim >= 16, got {D}")
    for name, t in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
        check_float(name, t)
    if block_tables.dim() != 2 or cu_seqlens_q.shape != (block_tables.shape[0] + 1,) or seq_lens_k.shape != (
        block_tables.shape[0],
    ):
        raise ValueError(
            f"paged_attention: block_tables {tuple(block_tables.shape)}, cu_seqlens_q {tuple(cu_seqlens_q.shape)} "
            f"and seq_lens_k {tuple(seq_lens_k.shape)} disagree on the batch size"
        )


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def default_num_splits(num_programs: int, max_seqlen_k: int, device: torch.device) -> int:
    """Enough splits to give every SM about two programs, each split at least MIN_KEYS_PER_SPLIT keys."""
    by_length = max_seqlen_k // MIN_KEYS_PER_SPLIT
    if by_length < 2:
        return 1
    if device.type == "cuda":
        sms = _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    else:
        sms = 4  # the interpreter: any small count exercises the same code
    want = math.ceil(2 * sms / max(1, num_programs))
    return max(1, min(want, by_length, MAX_SPLITS))


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    scale: float,
    sliding_window: int | None = None,
    softcap: float | None = None,
    num_splits: int | None = None,
) -> torch.Tensor:
    """Same contract as torch_ref.paged_attention. `num_splits` (decode only) overrides the split-K heuristic."""
    _check(q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens_k)
    T, H, D = q.shape
    B, Hk = block_tables.shape[0], k_cache.shape[2]
    G = H // Hk
    out = torch.empty_like(q)
    if T == 0 or B == 0:
        return out
    block_tables = block_tables if block_tables.stride(1) == 1 else block_tables.contiguous()
    cu_q = cu_seqlens_q.to(torch.int32)
    seq_k = seq_lens_k.to(torch.int32)
    has_window = sliding_window is not None and sliding_window > 0
    common = dict(
        HEAD_DIM=D, BLOCK_D=next_pow2(D), HAS_WINDOW=has_window, HAS_SOFTCAP=bool(softcap),
        DOT_DTYPE=dot_dtype(q.dtype), PRECISION=dot_precision(q.dtype),
    )
    strides = (*q.stride(), *k_cache.stride(), *v_cache.stride(), *out.stride(), block_tables.stride(0))
    runtime = (k_cache.shape[1], float(scale), float(softcap or 1.0), int(sliding_window or 0))
    block_n = 32 if interpreting() or D > 128 else 64
    if max_seqlen_q > 1:
        block_m = 16 if interpreting() else (32 if D > 128 else 64)
        grid = (triton.cdiv(max_seqlen_q, block_m), B, H)
        _prefill_kernel[grid](
            q, k_cache, v_cache, out, block_tables, cu_q, seq_k, *strides, *runtime,
            G=G, BLOCK_M=block_m, BLOCK_N=block_n, **common,
        )
        return out
    splits = num_splits if num_splits is not None else default_num_splits(B * Hk, max_seqlen_k, q.device)
    if splits < 1:
        raise ValueError(f"paged_attention: num_splits must be >= 1, got {splits}")
    block_d = common["BLOCK_D"]
    part_o = q.new_empty((B * H * splits * block_d if splits > 1 else 1,), dtype=torch.float32)
    part_ml = q.new_empty((B * H * splits * 2 if splits > 1 else 1,), dtype=torch.float32)
    _decode_kernel[(B, Hk, splits)](
        q, k_cache, v_cache, out, part_o, part_ml, block_tables, cu_q, seq_k, *strides, *runtime, splits,
        G=G, BLOCK_G=max(16, next_pow2(G)), BLOCK_N=block_n, SPLIT=splits > 1, **common,
    )
    if splits > 1:
        _reduce_kernel[(B, H)](
            out, part_o, part_ml, cu_q, *out.stride(), splits,
            HEAD_DIM=D, BLOCK_D=block_d, BLOCK_S=next_pow2(splits),
        )
    return out
