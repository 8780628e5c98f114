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
    w = weight.float() + weight_offset if weight_offset else weight.float()
    # One fused kernel (mean of squares, rsqrt, scale) instead of five ops; same float32 arithmetic.
    y = F.rms_norm(x.float(), (x.shape[-1],), w, eps).to(x.dtype)
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
    if is_neox and 2 * half == q.shape[-1] == k.shape[-1] and q.dtype == k.dtype == torch.float32:
        # Full-width neox rotation of q and k together: one rotation over [T, H + Hk, D] (~8 ops, not ~24).
        qk = torch.cat((q, k), dim=1)
        x1, x2 = qk[..., :half], qk[..., half:]
        out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
        return out[:, : q.shape[1]], out[:, q.shape[1] :]

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
    if slot_mapping.numel() == 0:  # a step over no tokens writes nothing
        return
    if int(slot_mapping.min()) < 0:
        keep = slot_mapping >= 0
        key, value, slot_mapping = key[keep], value[keep], slot_mapping[keep]
    if k_cache.is_contiguous() and v_cache.is_contiguous():
        # One index_copy_ per cache over the flat [blocks * block_size, Hk, D] view.
        k_cache.view(-1, *k_cache.shape[2:]).index_copy_(0, slot_mapping, key.to(k_cache.dtype))
        v_cache.view(-1, *v_cache.shape[2:]).index_copy_(0, slot_mapping, value.to(v_cache.dtype))
        return
    # Strided caches (K/V halves of one tensor): index (page, row) instead.
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
    if T == 0:  # a step over no tokens (an empty batch)
        return q.new_zeros(0, H, D)
    if T == 1 and B == 1 and not softcap:
        return _decode_one(q, k_cache, v_cache, block_tables, max_seqlen_k, scale, sliding_window)
    if max_seqlen_q == 1 and T == B and not softcap:
        return _decode_batch(q, k_cache, v_cache, block_tables, seq_lens_k, max_seqlen_k, scale, sliding_window)
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
    cdt = _attention_dtype(k_cache, softcap)
    qf = qp.to(cdt).view(B, Mq, Hk, G, D).permute(0, 2, 3, 1, 4).reshape(B, Hk, G * Mq, D)
    kf = kp.to(cdt).permute(0, 2, 1, 3)  # [B, Hk, K, D]
    vf = vp.to(cdt).permute(0, 2, 1, 3)
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
    is that sequence's length): ~10 ops instead of ~45 (no query packing, no masks: the keys are sliced
    to the window this token sees). Equal to the general path up to float32 summation order."""
    _, H, D = q.shape
    bs, Hk = k_cache.shape[1], k_cache.shape[2]
    nblk = max(1, math.ceil(seq_len / bs))
    bt = block_tables[0, :nblk]
    start = max(0, seq_len - sliding_window) if sliding_window is not None and sliding_window > 0 else 0
    k = k_cache.index_select(0, bt).view(nblk * bs, Hk, D)[start:seq_len].float()  # [S, Hk, D]
    v = v_cache.index_select(0, bt).view(nblk * bs, Hk, D)[start:seq_len].float()
    G = H // Hk
    # Scores [Hk, G, S] = q [Hk, G, D] @ k^T; softmax over S; @ v [Hk, S, D]. Unmasked: k/v hold only the
    # keys this token sees.
    s = torch.bmm(q.float().reshape(Hk, G, D), k.permute(1, 2, 0)).mul_(scale).softmax(-1)
    return torch.bmm(s, v.transpose(0, 1)).reshape(1, H, D).to(q.dtype)


def _attention_dtype(k_cache: torch.Tensor, softcap: float | None) -> torch.dtype:
    """float32 arithmetic, except over a bfloat16 cache without soft-capping: SDPA then runs in bf16 (float
    accumulation inside), skipping a float32 copy of every gathered key and value."""
    return torch.bfloat16 if k_cache.dtype == torch.bfloat16 and not softcap else torch.float32


def _decode_batch(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens_k: torch.Tensor,
    max_seqlen_k: int,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """B sequences, one new token each (q [B, H, D]; token b at position seq_lens_k[b] - 1): the general
    path without query packing or row masks, and an additive [B, 1, 1, K] mask that hides each sequence's
    padding (and keys outside its window). Same arithmetic as the general path (bf16 over a bf16 cache)."""
    B, H, D = q.shape
    bs, Hk = k_cache.shape[1], k_cache.shape[2]
    nblk = max(1, math.ceil(max_seqlen_k / bs))
    bt = block_tables[:, :nblk].reshape(-1)
    K, G = nblk * bs, H // Hk
    cdt = _attention_dtype(k_cache, softcap=None)
    k = k_cache.index_select(0, bt).view(B, K, Hk, D).to(cdt).permute(0, 2, 1, 3)  # [B, Hk, K, D]
    v = v_cache.index_select(0, bt).view(B, K, Hk, D).to(cdt).permute(0, 2, 1, 3)
    k_pos = torch.arange(K, device=q.device)
    lens = seq_lens_k.long()[:, None]
    hidden = k_pos[None, :] >= lens  # [B, K]: padding past each sequence's end
    if sliding_window is not None and sliding_window > 0:
        hidden |= k_pos[None, :] < lens - sliding_window
    mask = torch.zeros(B, 1, 1, K, dtype=cdt, device=q.device).masked_fill_(hidden[:, None, None, :], float("-inf"))
    o = F.scaled_dot_product_attention(q.to(cdt).view(B, Hk, G, D), k, v, attn_mask=mask, scale=scale)
    return o.reshape(B, H, D).to(q.dtype)


def apply_token_bitmask_(logits: torch.Tensor, words: torch.Tensor) -> None:
    """In place: logits [R, V] float32 at -inf wherever bit j of word w of words [R, W] int32 (token 32w + j)
    is clear; tokens past the mask's 32 * W are not allowed."""
    R, V = logits.shape
    bits = torch.arange(32, dtype=torch.int32, device=words.device)
    allowed = ((words[:, :, None] >> bits) & 1).bool().reshape(R, -1)
    if allowed.shape[1] < V:
        allowed = torch.cat([allowed, allowed.new_zeros(R, V - allowed.shape[1])], dim=1)
    logits.masked_fill_(~allowed[:, :V].to(logits.device), float("-inf"))
