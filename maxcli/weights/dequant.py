"""Vectorized torch dequantization of GGUF block formats, bit-exact with `gguf.quants.dequantize`.

Input is always raw bytes as uint8 `[rows, bytes_per_row]` (GGUF rows are independent: a row holds
`row_len / block_size` whole blocks). Output is float32 `[rows, row_len]`.

Bit-exactness invariant: every float32 product/sum is formed in the same order as the reference
(e.g. Q4_K is `(d * sc) * q - (dmin * m)`), each op rounding to float32; no fused multiply-add.

The `unpack_*` helpers return per-block (or per-sub-block) float32 scales/mins and small integer quants
so a quantized matmul can work on them; `value = scale * q (- min)` reproduces the dequantized weight.
Cost: one pass over the bytes plus O(rows * row_len) float32 output.
"""

from __future__ import annotations

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

QK_K = 256
T = GGMLQuantizationType


def block_layout(qtype: GGMLQuantizationType) -> tuple[int, int]:
    """(elements per block, bytes per block) of a GGML type."""
    return GGML_QUANT_SIZES[qtype]


def _blocks(raw: torch.Tensor, qtype: GGMLQuantizationType) -> tuple[torch.Tensor, int, int]:
    """Reshape raw row bytes to `[rows * nblk, type_size]`; returns (blocks, rows, nblk)."""
    if raw.dtype != torch.uint8 or raw.dim() != 2:
        raise ValueError(f"raw blocks must be a 2-D uint8 tensor, got {raw.dtype} with shape {tuple(raw.shape)}")
    _, type_size = block_layout(qtype)
    rows, bpr = raw.shape
    if bpr % type_size:
        raise ValueError(f"{qtype.name}: {bpr} bytes per row is not a multiple of the {type_size}-byte block")
    nblk = bpr // type_size
    return raw.contiguous().reshape(rows * nblk, type_size), rows, nblk


def _f16(b: torch.Tensor) -> torch.Tensor:
    """Two little-endian bytes per row -> float32 [n, 1]."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """[n, k] packed bytes -> [n, 2k] uint8: all low nibbles first, then all high nibbles."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=-1)


def _bits(packed: torch.Tensor, nbits: int) -> torch.Tensor:
    """Little-endian bit i of the packed bytes [n, k] -> uint8 [n, k*8] (bit-major: bit0 of all bytes...)."""
    shifts = torch.arange(nbits, dtype=torch.uint8).view(1, nbits, 1)
    return (packed.unsqueeze(1) >> shifts) & 1


# ---- 32-element block formats -------------------------------------------------------------------


def unpack_q4_0(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_0 (d:f16, qs[16]): -> (scales [rows, nblk] f32, q [rows, nblk, 32] int8 in [-8, 7])."""
    b, rows, nblk = _blocks(raw, T.Q4_0)
    q = _nibbles(b[:, 2:18]).to(torch.int8) - 8
    return _f16(b[:, 0:2]).view(rows, nblk), q.view(rows, nblk, 32)


def unpack_q4_1(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_1 (d, m: f16, qs[16]): -> (scales, mins [rows, nblk] f32, q [rows, nblk, 32] int8 in [0, 15]);
    value = scale * q + min."""
    b, rows, nblk = _blocks(raw, T.Q4_1)
    q = _nibbles(b[:, 4:20]).to(torch.int8)
    return _f16(b[:, 0:2]).view(rows, nblk), _f16(b[:, 2:4]).view(rows, nblk), q.view(rows, nblk, 32)


def unpack_q8_0(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q8_0 (d:f16, qs[32] int8): -> (scales [rows, nblk] f32, q [rows, nblk, 32] int8)."""
    b, rows, nblk = _blocks(raw, T.Q8_0)
    q = b[:, 2:34].contiguous().view(torch.int8)
    return _f16(b[:, 0:2]).view(rows, nblk), q.view(rows, nblk, 32)


def _q5_quants(qh: torch.Tensor, qs: torch.Tensor) -> torch.Tensor:
    """5-bit quants [n, 32] uint8 from qh (4 bytes = 32 high bits, element j at bit j) and 16 nibble bytes."""
    high = _bits(qh, 8).permute(0, 2, 1).reshape(-1, 32)  # element j = byte j//8, bit j%8
    return _nibbles(qs) | (high << 4)


def _dequant_q5_0(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q5_0)
    q = _q5_quants(b[:, 2:6], b[:, 6:22]).to(torch.int8) - 16
    return (_f16(b[:, 0:2]) * q.float()).view(rows, -1)


def _dequant_q5_1(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q5_1)
    q = _q5_quants(b[:, 4:8], b[:, 8:24]).float()
    return (_f16(b[:, 0:2]) * q + _f16(b[:, 2:4])).view(rows, -1)


# ---- 256-element super-block (K) formats --------------------------------------------------------


def _k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """12 packed bytes -> eight 6-bit scales and eight 6-bit mins (Q4_K / Q5_K layout), uint8 [n, 8] each."""
    d, m, md = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def unpack_q4_k(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_K (d, dmin: f16, scales[12], qs[128]): -> (scales, mins [rows, nblk*8] f32 per 32-element
    sub-block, q [rows, nblk*8, 32] int8 in [0, 15]); value = scale * q - min."""
    b, rows, nblk = _blocks(raw, T.Q4_K)
    sc, mn = _k_scale_min(b[:, 4:16])
    scales = _f16(b[:, 0:2]) * sc.float()
    mins = _f16(b[:, 2:4]) * mn.float()
    # qs: 4 chunks of 32 bytes; chunk c holds sub-block 2c in low nibbles and 2c+1 in high nibbles.
    qs = b[:, 16:144].reshape(-1, 4, 1, 32)
    q = torch.cat([qs & 0x0F, qs >> 4], dim=2).reshape(-1, 8, 32).to(torch.int8)
    return scales.view(rows, nblk * 8), mins.view(rows, nblk * 8), q.view(rows, nblk * 8, 32)


def _dequant_q4_k(raw: torch.Tensor) -> torch.Tensor:
    scales, mins, q = unpack_q4_k(raw)
    return (scales.unsqueeze(-1) * q.float() - mins.unsqueeze(-1)).view(raw.shape[0], -1)


def _dequant_q5_k(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q5_K)
    sc, mn = _k_scale_min(b[:, 4:16])
    scales = (_f16(b[:, 0:2]) * sc.float()).unsqueeze(-1)
    mins = (_f16(b[:, 2:4]) * mn.float()).unsqueeze(-1)
    qh = _bits(b[:, 16:48], 8)  # [n, 8, 32]: bit s of byte j is the high bit of sub-block s, element j
    qs = b[:, 48:176].reshape(-1, 4, 1, 32)
    ql = torch.cat([qs & 0x0F, qs >> 4], dim=2).reshape(-1, 8, 32)
    q = (ql | (qh << 4)).float()
    return (scales * q - mins).view(rows, -1)


def unpack_q6_k(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q6_K (ql[128], qh[64], scales[16] int8, d:f16): -> (scales [rows, nblk*16] f32 per 16-element
    sub-block, q [rows, nblk*16, 16] int8 in [-32, 31]); value = scale * q."""
    b, rows, nblk = _blocks(raw, T.Q6_K)
    scales = _f16(b[:, 208:210]) * b[:, 192:208].contiguous().view(torch.int8).float()
    ql = b[:, 0:128].reshape(-1, 2, 1, 64)
    ql = torch.cat([ql & 0x0F, ql >> 4], dim=2).reshape(-1, 8, 32)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
    qh = ((b[:, 128:192].reshape(-1, 2, 1, 32) >> shifts) & 0x03).reshape(-1, 8, 32)
    q = (ql | (qh << 4)).to(torch.int8) - 32
    return scales.view(rows, nblk * 16), q.view(rows, nblk * 16, 16)


def _dequant_q6_k(raw: torch.Tensor) -> torch.Tensor:
    scales, q = unpack_q6_k(raw)
    return (scales.unsqueeze(-1) * q.float()).view(raw.shape[0], -1)


def _dequant_q2_k(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q2_K)
    scales = b[:, 0:16]
    dl = (_f16(b[:, 80:82]) * (scales & 0x0F).float()).unsqueeze(-1)
    ml = (_f16(b[:, 82:84]) * (scales >> 4).float()).unsqueeze(-1)
    shifts = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
    q = ((b[:, 16:80].reshape(-1, 2, 1, 32) >> shifts) & 0x03).reshape(-1, 16, 16).float()
    return (dl * q - ml).view(rows, -1)


def _dequant_q3_k(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q3_K)
    hmask, qs, packed, d = b[:, 0:32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    low = torch.cat([packed[:, 0:8] & 0x0F, packed[:, 0:8] >> 4], dim=-1)  # [n, 16]
    shifts2 = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 4, 1)
    high = ((packed[:, 8:12].unsqueeze(1) >> shifts2) & 0x03).reshape(-1, 16)
    scales = ((low | (high << 4)).to(torch.int8) - 32).float()
    dl = (d * scales).unsqueeze(-1)
    shifts4 = torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(1, 1, 4, 1)
    ql = ((qs.reshape(-1, 2, 1, 32) >> shifts4) & 0x03).reshape(-1, 16, 16)
    qh = _bits(hmask, 8).reshape(-1, 16, 16) ^ 1  # a cleared mask bit subtracts 4
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).view(rows, -1)


# The three formats real GGUF files use most are dequantized into one preallocated float32 buffer
# with in-place ops: one float32 pass per op and no float32 temporaries. Temporaries are what cost at
# cold start (every fresh page is a page fault) and at peak RSS.


def _nibbles_into(out: torch.Tensor, qs: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """float32 out [n, 2k] <- low nibbles of qs [n, k] (minus offset), then high nibbles (minus offset)."""
    k = qs.shape[-1]
    lo, hi = out[:, :k], out[:, k:]
    lo.copy_(qs & 0x0F)
    hi.copy_(qs >> 4)
    if offset:
        out.sub_(offset)  # small integers: exact in float32, same values as the int8 reference
    return out


def _dequant_q4_0(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q4_0)
    out = _nibbles_into(torch.empty(b.shape[0], 32, dtype=torch.float32), b[:, 2:18], offset=8)
    return out.mul_(_f16(b[:, 0:2])).view(rows, -1)


def _dequant_q4_1(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q4_1)
    out = _nibbles_into(torch.empty(b.shape[0], 32, dtype=torch.float32), b[:, 4:20])
    return out.mul_(_f16(b[:, 0:2])).add_(_f16(b[:, 2:4])).view(rows, -1)


def _dequant_q8_0(raw: torch.Tensor) -> torch.Tensor:
    b, rows, _ = _blocks(raw, T.Q8_0)
    out = torch.empty(b.shape[0], 32, dtype=torch.float32)
    out.copy_(b[:, 2:34].contiguous().view(torch.int8))
    return out.mul_(_f16(b[:, 0:2])).view(rows, -1)


def _float_view(dtype: torch.dtype):
    def convert(raw: torch.Tensor) -> torch.Tensor:
        return raw.contiguous().view(dtype).float()

    return convert


_DEQUANT = {
    T.F32: _float_view(torch.float32),
    T.F16: _float_view(torch.float16),
    T.BF16: _float_view(torch.bfloat16),
    T.Q4_0: _dequant_q4_0,
    T.Q4_1: _dequant_q4_1,
    T.Q5_0: _dequant_q5_0,
    T.Q5_1: _dequant_q5_1,
    T.Q8_0: _dequant_q8_0,
    T.Q2_K: _dequant_q2_k,
    T.Q3_K: _dequant_q3_k,
    T.Q4_K: _dequant_q4_k,
    T.Q5_K: _dequant_q5_k,
    T.Q6_K: _dequant_q6_k,
}

SUPPORTED_QTYPES: frozenset[GGMLQuantizationType] = frozenset(_DEQUANT)


def _dequantize_with_gguf(raw: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """The types without a torch dequantizer here (IQ*, TQ*: rare on CPUs, no block kernel) through gguf-py's
    numpy reference. Cost: a float32 copy per call and numpy speed (load time only)."""
    import numpy as np
    from gguf.quants import dequantize as np_dequantize

    try:
        values = np_dequantize(np.ascontiguousarray(raw.cpu().numpy()), qtype)
    except NotImplementedError:
        raise ValueError(f"GGML type {qtype.name} is not supported: gguf-py cannot dequantize it") from None
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(raw.shape[0], -1)


def dequantize(raw: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """Raw row bytes uint8 [rows, bytes_per_row] of `qtype` -> float32 [rows, row_len]."""
    fn = _DEQUANT.get(qtype)
    if fn is None:
        return _dequantize_with_gguf(raw, qtype)
    if qtype in (T.F32, T.F16, T.BF16):
        _blocks(raw, qtype)  # validates shape/dtype
    return fn(raw)
