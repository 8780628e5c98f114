"""rotary_embedding: neox or normal (GPT-J) pairing, partial rotary; contract of torch_ref.rotary_embedding.

Grid (T,): one program rotates every q and k head of one token, reading that position's cos/sin row
once. cos_sin_cache [max_pos, R] holds cos in its first R/2 columns and sin in the rest (scaled RoPE
variants are baked into the cache by the model). Dims R..D pass through unchanged. Math in float32,
one rounding to the input dtype, as the reference.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from maxcli.kernels.common import check_float, next_pow2


@triton.jit
def _rotate_heads(
    src_ptr, dst_ptr, s_src_h, s_src_d, s_dst_h, s_dst_d, num_heads, cos, sin, half, head_dim,
    IS_NEOX: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, BLOCK_REST: tl.constexpr,
):
    offs_h = tl.arange(0, BLOCK_H)
    offs_i = tl.arange(0, BLOCK_HALF)
    h_ok = offs_h < num_heads
    mask = h_ok[:, None] & (offs_i[None, :] < half)
    if IS_NEOX:
        first, second = offs_i, offs_i + half
    else:
        first, second = 2 * offs_i, 2 * offs_i + 1
    x1 = tl.load(src_ptr + offs_h[:, None] * s_src_h + first[None, :] * s_src_d, mask=mask, other=0.0)
    x2 = tl.load(src_ptr + offs_h[:, None] * s_src_h + second[None, :] * s_src_d, mask=mask, other=0.0)
    x1 = x1.to(tl.float32)
    x2 = x2.to(tl.float32)
    out_ty = dst_ptr.dtype.element_ty
    tl.store(dst_ptr + offs_h[:, None] * s_dst_h + first[None, :] * s_dst_d,
             (x1 * cos[None, :] - x2 * sin[None, :]).to(out_ty), mask=mask)
    tl.store(dst_ptr + offs_h[:, None] * s_dst_h + second[None, :] * s_dst_d,
             (x2 * cos[None, :] + x1 * sin[None, :]).to(out_ty), mask=mask)
    if BLOCK_REST > 0:
        offs_r = 2 * half + tl.arange(0, BLOCK_REST)
        rest_mask = h_ok[:, None] & (offs_r[None, :] < head_dim)
        rest = tl.load(src_ptr + offs_h[:, None] * s_src_h + offs_r[None, :] * s_src_d, mask=rest_mask)
        tl.store(dst_ptr + offs_h[:, None] * s_dst_h + offs_r[None, :] * s_dst_d, rest, mask=rest_mask)


@triton.jit
def _rotary_kernel(
    pos_ptr, q_ptr, k_ptr, q_out_ptr, k_out_ptr, cache_ptr,
    s_q_t, s_q_h, s_q_d, s_k_t, s_k_h, s_k_d, s_qo_t, s_qo_h, s_qo_d, s_ko_t, s_ko_h, s_ko_d, s_cache,
    num_q_heads, num_k_heads, half, head_dim,
    IS_NEOX: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_HALF: tl.constexpr,
    BLOCK_REST: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs_i = tl.arange(0, BLOCK_HALF)
    i_ok = offs_i < half
    cos = tl.load(cache_ptr + pos * s_cache + offs_i, mask=i_ok, other=0.0).to(tl.float32)
    sin = tl.load(cache_ptr + pos * s_cache + half + offs_i, mask=i_ok, other=0.0).to(tl.float32)
    _rotate_heads(q_ptr + t * s_q_t, q_out_ptr + t * s_qo_t, s_q_h, s_q_d, s_qo_h, s_qo_d, num_q_heads,
                  cos, sin, half, head_dim, IS_NEOX, BLOCK_HQ, BLOCK_HALF, BLOCK_REST)
    _rotate_heads(k_ptr + t * s_k_t, k_out_ptr + t * s_ko_t, s_k_h, s_k_d, s_ko_h, s_ko_d, num_k_heads,
                  cos, sin, half, head_dim, IS_NEOX, BLOCK_HK, BLOCK_HALF, BLOCK_REST)


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    if q.dim() != 3 or k.dim() != 3 or q.shape[0] != k.shape[0] or q.shape[2] != k.shape[2]:
        raise ValueError(f"rotary_embedding wants q [T, H, D] and k [T, Hk, D]; got {tuple(q.shape)}, {tuple(k.shape)}")
    if positions.shape != q.shape[:1]:
        raise ValueError(f"rotary_embedding: positions {tuple(positions.shape)} do not match {q.shape[0]} tokens")
    rot = cos_sin_cache.shape[-1] if cos_sin_cache.dim() == 2 else -1
    D = q.shape[2]
    if rot <= 0 or rot % 2 or rot > D:
        raise ValueError(
            f"cos_sin_cache must be [max_pos, R] with even R <= head_dim {D}, got {tuple(cos_sin_cache.shape)}"
        )
    if cos_sin_cache.stride(-1) != 1:
        cos_sin_cache = cos_sin_cache.contiguous()
    for name, t in (("q", q), ("k", k), ("cos_sin_cache", cos_sin_cache)):
        check_float(name, t)
    q_out, k_out = torch.empty_like(q, memory_format=torch.contiguous_format), torch.empty_like(
        k, memory_format=torch.contiguous_format
    )
    if q.shape[0] == 0:
        return q_out, k_out
    half = rot // 2
    _rotary_kernel[(q.shape[0],)](
        positions, q, k, q_out, k_out, cos_sin_cache,
        *q.stride(), *k.stride(), *q_out.stride(), *k_out.stride(), cos_sin_cache.stride(0),
        q.shape[1], k.shape[1], half, D,
        IS_NEOX=bool(is_neox), BLOCK_HQ=next_pow2(q.shape[1]), BLOCK_HK=next_pow2(k.shape[1]),
        BLOCK_HALF=next_pow2(half), BLOCK_REST=next_pow2(D - rot) if D > rot else 0,
    )
    return q_out, k_out
