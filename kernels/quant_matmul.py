"""GGUF weight-only matmul y = x @ W.T with W dequantized in registers; reference maxcli.ops.quant_matmul.

W [N, K] stays as raw GGUF rows (uint8 [N, bytes_per_row]). `_dequant_tile` turns a [BLOCK_N, BLOCK_K]
window of W into float32 by computing, for every element, its block's byte offset, its quant bits and its
scale bytes (fp16 scales are assembled from two bytes and bitcast). Elements of one block reread the same
scale bytes, which hit L1; the weight bytes themselves are read once per program.

Two launch shapes:
- GEMV (decode, M <= GEMV_MAX_ROWS): grid (N tiles, M tiles); a [BLOCK_M, BLOCK_N, BLOCK_K] broadcast
  product reduced over K, so W is read once per BLOCK_M rows of x and no tensor-core padding is wasted.
- GEMM (prefill): grid (M tiles, N tiles); tl.dot on [BLOCK_M, BLOCK_K] x [BLOCK_K, BLOCK_N] tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from maxcli.kernels.common import check_float, dot_dtype, dot_precision, interpreting, next_pow2
from maxcli.ops.quant_matmul import check_gguf_matmul_args

Q4_0 = tl.constexpr(int(GGMLQuantizationType.Q4_0))
Q4_1 = tl.constexpr(int(GGMLQuantizationType.Q4_1))
Q5_0 = tl.constexpr(int(GGMLQuantizationType.Q5_0))
Q5_1 = tl.constexpr(int(GGMLQuantizationType.Q5_1))
Q8_0 = tl.constexpr(int(GGMLQuantizationType.Q8_0))
Q4_K = tl.constexpr(int(GGMLQuantizationType.Q4_K))
Q5_K = tl.constexpr(int(GGMLQuantizationType.Q5_K))
Q6_K = tl.constexpr(int(GGMLQuantizationType.Q6_K))

KERNEL_QTYPES: frozenset[GGMLQuantizationType] = frozenset(
    GGMLQuantizationType(int(q)) for q in (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)
)
GEMV_MAX_ROWS = 4


@triton.jit
def _byte(ptr, mask):
    return tl.load(ptr, mask=mask, other=0).to(tl.int32)


@triton.jit
def _f16(ptr, mask):
    """Little-endian fp16 at ptr, as float32."""
    bits = (_byte(ptr, mask) | (_byte(ptr + 1, mask) << 8)).to(tl.uint16)
    return bits.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _k_scale_min(sc_ptr, s, mask):
    """6-bit scale and min of sub-block s (0..7) from a K-quant's 12 packed scale bytes."""
    low = s < 4
    b_s = _byte(sc_ptr + s, mask)
    b_s4 = _byte(sc_ptr + s + 4, mask)
    b_sm4 = _byte(sc_ptr + tl.where(low, s, s - 4), mask)
    scale = tl.where(low, b_s & 63, (b_s4 & 15) | ((b_sm4 >> 6) << 4))
    minimum = tl.where(low, b_s4 & 63, (b_s4 >> 4) | ((b_s >> 6) << 4))
    return scale.to(tl.float32), minimum.to(tl.float32)


@triton.jit
def _dequant_tile(w_ptr, row_bytes, offs_n, n_ok, offs_k, k_ok,
                  QTYPE: tl.constexpr, QK: tl.constexpr, BLOCK_BYTES: tl.constexpr):
    """float32 W[offs_n, offs_k] (zeros where masked) from GGUF rows of `row_bytes` bytes."""
    mask = n_ok[:, None] & k_ok[None, :]
    j = (offs_k % QK)[None, :]  # index inside the block
    base = w_ptr + offs_n.to(tl.int64)[:, None] * row_bytes + (offs_k // QK * BLOCK_BYTES)[None, :]
    if QTYPE == Q4_0:
        q = (_byte(base + 2 + j % 16, mask) >> (4 * (j // 16))) & 15
        w = (q - 8).to(tl.float32) * _f16(base, mask)
    elif QTYPE == Q4_1:
        q = (_byte(base + 4 + j % 16, mask) >> (4 * (j // 16))) & 15
        w = _f16(base, mask) * q.to(tl.float32) + _f16(base + 2, mask)
    elif QTYPE == Q5_0:
        q = (_byte(base + 6 + j % 16, mask) >> (4 * (j // 16))) & 15
        q = q | (((_byte(base + 2 + j // 8, mask) >> (j % 8)) & 1) << 4)
        w = (q - 16).to(tl.float32) * _f16(base, mask)
    elif QTYPE == Q5_1:
        q = (_byte(base + 8 + j % 16, mask) >> (4 * (j // 16))) & 15
        q = q | (((_byte(base + 4 + j // 8, mask) >> (j % 8)) & 1) << 4)
        w = _f16(base, mask) * q.to(tl.float32) + _f16(base + 2, mask)
    elif QTYPE == Q8_0:
        q = _byte(base + 2 + j, mask)
        w = (q - ((q >> 7) << 8)).to(tl.float32) * _f16(base, mask)  # int8 from its byte
    elif QTYPE == Q4_K:
        # 144 bytes: d, dmin (fp16), 12 scale bytes, 128 bytes of nibbles; 64 values per 32 bytes.
        s = j // 32
        q = (_byte(base + 16 + (j // 64) * 32 + j % 32, mask) >> (4 * (s % 2))) & 15
        scale, minimum = _k_scale_min(base + 4, s, mask)
        w = (_f16(base, mask) * scale) * q.to(tl.float32) - _f16(base + 2, mask) * minimum
    elif QTYPE == Q5_K:
        # 176 bytes: d, dmin, 12 scale bytes, 32 high-bit bytes, 128 bytes of nibbles.
        s = j // 32
        q = (_byte(base + 48 + (j // 64) * 32 + j % 32, mask) >> (4 * (s % 2))) & 15
        q = q | (((_byte(base + 16 + j % 32, mask) >> s) & 1) << 4)
        scale, minimum = _k_scale_min(base + 4, s, mask)
        w = (_f16(base, mask) * scale) * q.to(tl.float32) - _f16(base + 2, mask) * minimum
    else:  # Q6_K
        # 210 bytes: 128 low-nibble bytes, 64 high-2-bit bytes, 16 int8 scales, d (fp16).
        half = j // 128
        g = (j % 128) // 32
        lane = j % 32
        low = (_byte(base + 64 * half + lane + 32 * (g % 2), mask) >> (4 * (g // 2))) & 15
        high = (_byte(base + 128 + 32 * half + lane, mask) >> (2 * g)) & 3
        sc = _byte(base + 192 + 8 * half + lane // 16 + 2 * g, mask)
        sc = sc - ((sc >> 7) << 8)
        w = (_f16(base + 208, mask) * sc.to(tl.float32)) * ((low | (high << 4)) - 32).to(tl.float32)
    return tl.where(mask, w, 0.0)


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, y_ptr, M, N, K, s_xm, s_ym, row_bytes,
    QTYPE: tl.constexpr, QK: tl.constexpr, BLOCK_BYTES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    n_ok = offs_n < N
    m_ok = offs_m < M
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        w = _dequant_tile(w_ptr, row_bytes, offs_n, n_ok, offs_k, k_ok, QTYPE, QK, BLOCK_BYTES)
        x = tl.load(x_ptr + offs_m.to(tl.int64)[:, None] * s_xm + offs_k[None, :],
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(x[:, None, :] * w[None, :, :], 2)
    tl.store(y_ptr + offs_m.to(tl.int64)[:, None] * s_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _gemm_kernel(
    x_ptr, w_ptr, y_ptr, M, N, K, s_xm, s_ym, row_bytes,
    QTYPE: tl.constexpr, QK: tl.constexpr, BLOCK_BYTES: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_DTYPE: tl.constexpr, PRECISION: tl.constexpr,
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    m_ok = offs_m < M
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        w = _dequant_tile(w_ptr, row_bytes, offs_n, n_ok, offs_k, k_ok, QTYPE, QK, BLOCK_BYTES)
        x = tl.load(x_ptr + offs_m.to(tl.int64)[:, None] * s_xm + offs_k[None, :],
                    mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        acc += tl.dot(x.to(DOT_DTYPE), tl.trans(w.to(DOT_DTYPE)), input_precision=PRECISION)
    tl.store(y_ptr + offs_m.to(tl.int64)[:, None] * s_ym + offs_n[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=m_ok[:, None] & n_ok[None, :])


def gguf_matmul(
    x: torch.Tensor,
    raw: torch.Tensor,
    qtype: GGMLQuantizationType,
    out_features: int,
    in_features: int,
) -> torch.Tensor:
    """Same contract as maxcli.ops.quant_matmul.gguf_matmul for qtype in KERNEL_QTYPES."""
    if qtype not in KERNEL_QTYPES:
        names = ", ".join(sorted(q.name for q in KERNEL_QTYPES))
        raise ValueError(f"no Triton kernel for GGUF type {qtype.name} (have {names})")
    check_gguf_matmul_args(x, raw, qtype, out_features, in_features)
    check_float("x", x)
    qk, block_bytes = GGML_QUANT_SIZES[qtype]
    x2 = (x if x.stride(-1) == 1 else x.contiguous()).reshape(-1, in_features)
    raw = raw if raw.stride(-1) == 1 and raw.stride(0) == raw.shape[1] else raw.contiguous()
    M, N, K = x2.shape[0], out_features, in_features
    y = x2.new_empty((M, N))
    if M == 0 or N == 0:
        return y.view(*x.shape[:-1], N)
    fmt = dict(QTYPE=int(qtype), QK=qk, BLOCK_BYTES=block_bytes)
    if M <= GEMV_MAX_ROWS:
        block_m = next_pow2(M)
        block_n = 32 if interpreting() else 64
        _gemv_kernel[(triton.cdiv(N, block_n), triton.cdiv(M, block_m))](
            x2, raw, y, M, N, K, x2.stride(0), y.stride(0), raw.shape[1],
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=64, **fmt,
        )
    else:
        block_m = 16 if M <= 16 or interpreting() else 64
        block_n = 32 if interpreting() else 64
        _gemm_kernel[(triton.cdiv(M, block_m), triton.cdiv(N, block_n))](
            x2, raw, y, M, N, K, x2.stride(0), y.stride(0), raw.shape[1],
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=32 if interpreting() else 64,
            DOT_DTYPE=dot_dtype(x.dtype), PRECISION=dot_precision(x.dtype), **fmt,
        )
    return y.view(*x.shape[:-1], N)
