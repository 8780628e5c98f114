"""Torch implementations of every op: the reference the Triton kernels must match, and the CPU path.

Shapes use T = packed tokens of a step, H = query heads, Hk = KV heads, D = head dim, B = sequences.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    weight_offset: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """y = x / rms(x) * (weight + weight_offset), in float32; Gemma uses weight_offset=1.

    With `residual`, x + residual is normalized and returned too: (normed, x + residual).
    """
    if residual is not None:
        x = x + residual
        summed = x
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    w = weight.float() + weight_offset if weight_offset else weight.float()
    y = (y * w).to(x.dtype)
    return (y, summed) if residual is not None else y


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    return F.layer_norm(x.float(), (x.shape[-1],), weight.float(), None if bias is None else bias.float(), eps).to(
        x.dtype
    )


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, H, D] and k [T, Hk, D] by position.

    cos_sin_cache [max_pos, R] holds cos in its first R/2 columns and sin in the rest; R <= D (partial
    rotary rotates the first R dims only). neox pairs dim i with i + R/2; normal (GPT-J) pairs 2i, 2i+1.
    """
    cs = cos_sin_cache[positions].float()
    half = cs.shape[-1] // 2
    cos, sin = cs[:, None, :half], cs[:, None, half:]

    def rot(x: torch.Tensor) -> torch.Tensor:
        r = 2 * half
        xr, rest = x[..., :r].float(), x[..., r:]
        if is_neox:
            x1, x2 = xr[..., :half], xr[..., half:]
            out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        else:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]
            out = torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
        return torch.cat((out.to(x.dtype), rest), dim=-1) if rest.shape[-1] else out.to(x.dtype)

    return rot(q), rot(k)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2F] -> silu(x[..., :F]) * x[..., F:]."""
    d = x.shape[-1] // 2
    return F.silu(x[..., :d]) * x[..., d:]


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1] // 2
    return F.gelu(x[..., :d], approximate="tanh") * x[..., d:]


def store_kvcache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    """Write key/value [T, Hk, D] into caches [num_blocks, block_size, Hk, D] at slot_mapping [T] (-1 skips)."""
    bs = k_cache.shape[1]
    keep = slot_mapping >= 0
    if not bool(keep.all()):
        key, value, slot_mapping = key[keep], value[keep], slot_mapping[keep]
    # Index (page, row) rather than a flattened view so strided caches (K/V halves of one tensor) work.
    page, row = slot_mapping // bs, slot_mapping % bs
    k_cache[page, row] = key.to(k_cache.dtype)
    v_cache[page, row] = value.to(v_cache.dtype)


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
) -> torch.Tensor:
    """Causal attention of packed new tokens q [T, H, D] over each sequence's paged K/V (already written).

    New token i of sequence b sits at position p = seq_lens_k[b] - q_len[b] + i and sees keys at
    positions j with j <= p and, with a sliding window W, j > p - W. Returns [T, H, D] in q's dtype.
    Cost: pads every sequence to (max_seqlen_q, max_seqlen_k); one batched matmul, no per-sequence loop.
    """
    T, H, D = q.shape
    B = block_tables.shape[0]
    if T == 1 and B == 1 and not softcap:
        return _decode_one(q, k_cache, v_cache, block_tables, max_seqlen_k, scale, sliding_window)
    bs, Hk = k_cache.shape[1], k_cache.shape[2]
    dev = q.device
    nblk = max(1, math.ceil(max_seqlen_k / bs))
    q_lens = (cu_seqlens_q[1:] - cu_seqlens_q[:-1]).long()
    # Packed -> padded query rows.
    offs = torch.arange(max_seqlen_q, device=dev)
    row_valid = offs[None, :] < q_lens[:, None]  # [B, Mq]
    row_idx = (cu_seqlens_q[:-1, None].long() + offs[None, :]).clamp(max=T - 1)  # [B, Mq]
    qp = q[row_idx]  # [B, Mq, H, D]
    # Gather keys/values of each sequence's blocks: [B, nblk*bs, Hk, D]. index_select, not k_cache[bt]:
    # advanced indexing of a large cache is orders of magnitude slower on CPU for the same few rows.
    bt = block_tables[:, :nblk].reshape(-1).long()
    K = nblk * bs
    kp = k_cache.index_select(0, bt).view(B, K, Hk, D)
    vp = v_cache.index_select(0, bt).view(B, K, Hk, D)
    q_pos = (seq_lens_k[:, None].long() - q_lens[:, None]) + offs[None, :]  # [B, Mq]
    k_pos = torch.arange(K, device=dev)
    mask = (k_pos[None, None, :] <= q_pos[:, :, None]) & (k_pos[None, None, :] < seq_lens_k[:, None, None].long())
    if sliding_window is not None and sliding_window > 0:
        mask &= k_pos[None, None, :] > (q_pos[:, :, None] - sliding_window)
    mask &= row_valid[:, :, None]
    mask[:, :, 0] |= ~row_valid  # padded rows see one key so softmax stays finite; they are dropped below
    # GQA without copying K/V per query head: the G query heads of each KV head become G*Mq rows.
    G, Mq = H // Hk, max_seqlen_q
    qf = qp.float().view(B, Mq, Hk, G, D).permute(0, 2, 3, 1, 4).reshape(B, Hk, G * Mq, D)
    kf = kp.float().permute(0, 2, 1, 3)  # [B, Hk, K, D]
    vf = vp.float().permute(0, 2, 1, 3)
    m = mask[:, None, None].expand(B, 1, G, Mq, K).reshape(B, 1, G * Mq, K)
    if softcap:
        s = torch.matmul(qf, kf.transpose(-1, -2)) * scale
        s = softcap * torch.tanh(s / softcap)
        s = s.masked_fill(~m, float("-inf"))
        o = torch.matmul(torch.softmax(s, dim=-1), vf)
    else:
        o = F.scaled_dot_product_attention(qf, kf, vf, attn_mask=m, scale=scale)
    o = o.view(B, Hk, G, Mq, D).permute(0, 3, 1, 2, 4).reshape(B, Mq, H, D)
    return o[row_valid].to(q.dtype)


def _decode_one(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_len: int,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """One sequence, one new token at position seq_len - 1 (single-stream decode; for B = 1 max_seqlen_k
    is that sequence's length). Same SDPA inputs as the general path (padded pages, the same boolean
    mask), so the same bits, from ~12 ops instead of ~45: no query packing, no per-row masks."""
    _, H, D = q.shape
    bs, Hk = k_cache.shape[1], k_cache.shape[2]
    nblk = max(1, math.ceil(seq_len / bs))
    bt = block_tables[0, :nblk].long()
    kf = k_cache.index_select(0, bt).view(1, nblk * bs, Hk, D).float().permute(0, 2, 1, 3)  # [1, Hk, K, D]
    vf = v_cache.index_select(0, bt).view(1, nblk * bs, Hk, D).float().permute(0, 2, 1, 3)
    k_pos = torch.arange(nblk * bs, device=q.device)
    mask = k_pos < seq_len
    if sliding_window is not None and sliding_window > 0:
        mask &= k_pos > seq_len - 1 - sliding_window
    G = H // Hk
    m = mask.expand(1, 1, G, nblk * bs)
    o = F.scaled_dot_product_attention(q.float().view(1, Hk, G, D), kf, vf, attn_mask=m, scale=scale)
    return o.view(1, H, D).to(q.dtype)
