"""Builders of small, real paged-attention batches and GGUF weight rows for the kernel tests."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import quantize

Q = GGMLQuantizationType

# Byte offsets of each block's fp16 scale fields (d, and dmin / m where the format has one).
FP16_FIELDS: dict[GGMLQuantizationType, tuple[int, ...]] = {
    Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q8_0: (0,),
    Q.Q2_K: (80, 82), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,),
}
QUANTIZABLE = {Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0}  # types gguf-py can quantize


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    """float32: summation-order noise. 16-bit: two ulps (the interpreter truncates fp32 -> bf16)."""
    return {"atol": 2e-5, "rtol": 2e-5} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}


@dataclass
class PagedBatch:
    q: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    block_tables: torch.Tensor
    cu_seqlens_q: torch.Tensor
    seq_lens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    scale: float

    def args(self) -> tuple:
        return (self.q, self.k_cache, self.v_cache, self.block_tables, self.cu_seqlens_q, self.seq_lens_k,
                self.max_seqlen_q, self.max_seqlen_k, self.scale)


def paged_batch(
    q_lens: list[int], k_lens: list[int], heads: int, kv_heads: int, head_dim: int, page_size: int,
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", seed: int = 0,
    strided_cache: bool = False,
) -> PagedBatch:
    """Random q and caches; each sequence gets shuffled, non-contiguous pages. With strided_cache the
    caches are the K and V halves of one [num_blocks, 2, page, Hk, D] tensor (the engine's layout)."""
    g = torch.Generator().manual_seed(seed)
    pages = [math.ceil(k / page_size) for k in k_lens]
    num_blocks = sum(pages) + 2
    shape = (num_blocks, 2, page_size, kv_heads, head_dim)
    kv = torch.randn(shape, generator=g).to(dtype)
    if strided_cache:
        k_cache, v_cache = kv[:, 0], kv[:, 1]
    else:
        k_cache, v_cache = kv[:, 0].contiguous(), kv[:, 1].contiguous()
    order = torch.randperm(num_blocks, generator=g)
    tables = torch.zeros(len(q_lens), max(pages), dtype=torch.int32)
    used = 0
    for b, n in enumerate(pages):
        tables[b, :n] = order[used:used + n]
        used += n
    q = torch.randn(sum(q_lens), heads, head_dim, generator=g).to(dtype)
    cu = torch.tensor([0, *np.cumsum(q_lens)], dtype=torch.int32)
    return PagedBatch(
        q.to(device), k_cache.to(device), v_cache.to(device), tables.to(device), cu.to(device),
        torch.tensor(k_lens, dtype=torch.int32, device=device), max(q_lens), max(k_lens), head_dim**-0.5,
    )


def dense_attention(
    batch: PagedBatch, sliding_window: int | None = None, softcap: float | None = None
) -> torch.Tensor:
    """Plain attention, one sequence at a time: unpage K/V, build the causal (+window) mask by hand."""
    out = torch.empty(batch.q.shape, dtype=torch.float32, device=batch.q.device)
    page = batch.k_cache.shape[1]
    group = batch.q.shape[1] // batch.k_cache.shape[2]
    for b in range(batch.block_tables.shape[0]):
        start, end = int(batch.cu_seqlens_q[b]), int(batch.cu_seqlens_q[b + 1])
        kv_len, q_len = int(batch.seq_lens_k[b]), end - start
        if q_len == 0:
            continue
        slots = [int(batch.block_tables[b, j // page]) * page + j % page for j in range(kv_len)]
        k = batch.k_cache.reshape(-1, *batch.k_cache.shape[2:])[slots].float().repeat_interleave(group, 1)
        v = batch.v_cache.reshape(-1, *batch.v_cache.shape[2:])[slots].float().repeat_interleave(group, 1)
        q = batch.q[start:end].float()
        scores = torch.einsum("qhd,khd->hqk", q, k) * batch.scale
        if softcap:
            scores = softcap * torch.tanh(scores / softcap)
        mask = torch.zeros(q_len, kv_len, dtype=torch.bool)
        for i in range(q_len):
            pos = kv_len - q_len + i
            lo = 0 if not sliding_window else max(0, pos - sliding_window + 1)
            mask[i, lo:pos + 1] = True
        scores = scores.masked_fill(~mask.to(scores.device), float("-inf"))
        out[start:end] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
    return out


def gguf_rows(qtype: GGMLQuantizationType, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """uint8 [rows, bytes_per_row] of `qtype`: quantized random floats where gguf-py can quantize,
    else random bytes with finite positive fp16 scales (every bit pattern of the quants is valid)."""
    rng = np.random.default_rng(seed)
    if qtype in QUANTIZABLE:
        return quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, (rows, cols // block_elems, block_bytes), dtype=np.uint8)
    for offset in FP16_FIELDS[qtype]:
        scales = rng.uniform(1e-3, 2e-2, raw.shape[:2]).astype(np.float16)
        raw[:, :, offset:offset + 2] = scales[..., None].view(np.uint8)
    return raw.reshape(rows, -1)
