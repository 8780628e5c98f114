"""Weight-only quantized matmuls on CPU through torch's packed kernels, fed from GGUF blocks.

- Q4_0 / Q4_1 / Q4_K -> `aten._weight_int4pack_mm_for_cpu`: 4-bit codes q in [0, 16) with one (scale, zero)
  per 32 inputs of each output row; the kernel computes w = (q - 8) * scale + zero (checked by the tests).
  GGUF's per-32 sub-blocks map onto those groups without requantizing:
    Q4_0: w = d (q - 8)            -> scale d,        zero 0
    Q4_1: w = d q + m              -> scale d,        zero m + 8 d
    Q4_K: w = d sc q - dmin mn     -> scale d sc,     zero 8 d sc - dmin mn   (per 32-wide sub-block)
- Q8_0 -> `aten._weight_int8pack_mm`: int8 codes with one scale per output row. Q8_0 has one scale per 32
  inputs, so the values are requantized per row (error at most half a row step, max|w_row| / 254).

Both kernels are fast only with bfloat16 activations and scales (fp32 activations run ~50x slower), so x is
cast to bfloat16 around the matmul and the result cast back: this path is approximate by design (bf16
rounding of activations and of the per-group scales), and opt-in (PipelineConfig.cpu_quantized_matmul).
Memory: 4.5 bits per weight for int4 (codes + bf16 scale/zero per 32), 8 bits + 2 bytes per row for int8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

INT4_GROUP = 32
INT4_ROW_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu packs rows in tiles of 16
INT4_QTYPES = frozenset({GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q4_K})
INT8_QTYPES = frozenset({GGMLQuantizationType.Q8_0})
PACKED_QTYPES = INT4_QTYPES | INT8_QTYPES
ACTIVATION_DTYPE = torch.bfloat16


_INT4_MM = torch.ops.aten._weight_int4pack_mm_for_cpu.default
_INT8_MM = torch.ops.aten._weight_int8pack_mm.default


def int4_matmul(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor) -> torch.Tensor:
    """x [..., K] @ W.T -> [..., N] in x's dtype; W = int4 codes `packed` with [K/32, N, 2] (scale, zero)."""
    if x.dim() != 2:
        return int4_matmul(x.reshape(-1, x.shape[-1]), packed, scales_zeros).reshape(*x.shape[:-1], -1)
    return _INT4_MM(x.to(ACTIVATION_DTYPE), packed, INT4_GROUP, scales_zeros).to(x.dtype)


def int8_matmul(x: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x [..., K] @ (codes * scales[:, None]).T -> [..., N] in x's dtype."""
    if x.dim() != 2:
        return int8_matmul(x.reshape(-1, x.shape[-1]), codes, scales).reshape(*x.shape[:-1], -1)
    return _INT8_MM(x.to(ACTIVATION_DTYPE), codes, scales).to(x.dtype)


@dataclass(frozen=True)
class Int4Weight:
    """W [out_features, in_features] as the int4 kernel's packed codes + [in/32, out, 2] bf16 (scale, zero)."""

    packed: torch.Tensor
    scales_zeros: torch.Tensor
    out_features: int
    in_features: int

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out] in x's dtype."""
        return int4_matmul(x, self.packed, self.scales_zeros)

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.scales_zeros.nbytes


@dataclass(frozen=True)
class Int8Weight:
    """W [out, in] ~= codes (int8 [out, in]) * scales (bf16 [out])."""

    codes: torch.Tensor
    scales: torch.Tensor

    @property
    def out_features(self) -> int:
        return self.codes.shape[0]

    @property
    def in_features(self) -> int:
        return self.codes.shape[1]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        return int8_matmul(x, self.codes, self.scales)

    @property
    def nbytes(self) -> int:
        return self.codes.nbytes + self.scales.nbytes


PackedWeight = Int4Weight | Int8Weight


def _blocks(raw: torch.Tensor, qtype: GGMLQuantizationType, in_features: int) -> torch.Tensor:
    """raw uint8 [N, bytes_per_row] -> [N, blocks_per_row, block_bytes]; one-line ValueError on a bad shape."""
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    if in_features % block_elems:
        raise ValueError(f"{qtype.name} needs in_features divisible by {block_elems}, got {in_features}")
    nblocks = in_features // block_elems
    if raw.dtype != torch.uint8 or raw.dim() != 2 or raw.shape[1] != nblocks * block_bytes:
        raise ValueError(
            f"{qtype.name} rows of {in_features} values need uint8 [N, {nblocks * block_bytes}], "
            f"got {raw.dtype} {list(raw.shape)}"
        )
    return raw.contiguous().view(raw.shape[0], nblocks, block_bytes)


def _f16(b: torch.Tensor) -> torch.Tensor:
    """Little-endian fp16 stored in the last dim (2 bytes) -> float32 without that dim."""
    return b.contiguous().view(torch.float16)[..., 0].float()


def _nibbles(qs: torch.Tensor) -> torch.Tensor:
    """qs uint8 [..., 16] -> codes [..., 32]: low nibbles are elements 0..15, high nibbles 16..31."""
    return torch.cat((qs & 0x0F, qs >> 4), dim=-1)


def _q4k_scales_mins(s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 packed bytes of a Q4_K block -> 8 six-bit sub-block scales and 8 mins (as int32)."""
    s = s.to(torch.int32)
    lo_sc, lo_mn = s[..., 0:4] & 63, s[..., 4:8] & 63
    hi_sc = (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 6) << 4)
    hi_mn = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    return torch.cat((lo_sc, hi_sc), -1), torch.cat((lo_mn, hi_mn), -1)


def int4_codes_scales_zeros(
    raw: torch.Tensor, qtype: GGMLQuantizationType, in_features: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes int32 [N, K] in [0, 16), scale, zero float32 [N, K/32]) with W = (codes - 8) * scale + zero."""
    if qtype not in INT4_QTYPES:
        raise ValueError(f"{qtype.name} has no int4 mapping (supported: Q4_0, Q4_1, Q4_K)")
    b = _blocks(raw, qtype, in_features)
    n = b.shape[0]
    if qtype is GGMLQuantizationType.Q4_K:
        d, dmin = _f16(b[..., 0:2])[..., None], _f16(b[..., 2:4])[..., None]
        sc, mn = _q4k_scales_mins(b[..., 4:16])
        # 4 chunks of 32 bytes: chunk c holds sub-block 2c in its low nibbles and 2c+1 in its high ones.
        qs = b[..., 16:144].reshape(n, -1, 4, 32)
        codes = torch.stack((qs & 0x0F, qs >> 4), dim=3).reshape(n, -1)
        scale = (d * sc).reshape(n, -1)
        zero = (8 * d * sc - dmin * mn).reshape(n, -1)
        return codes.to(torch.int32), scale, zero
    if qtype is GGMLQuantizationType.Q4_0:
        d, qs = _f16(b[..., 0:2]), b[..., 2:18]
        zero = torch.zeros_like(d)
    else:  # Q4_1
        d, m, qs = _f16(b[..., 0:2]), _f16(b[..., 2:4]), b[..., 4:20]
        zero = m + 8 * d
    return _nibbles(qs).reshape(n, -1).to(torch.int32), d, zero


def packable(qtype: GGMLQuantizationType, out_features: int, in_features: int) -> bool:
    """Whether pack_gguf accepts a [out_features, in_features] weight of this type."""
    if qtype in INT4_QTYPES:
        return out_features % INT4_ROW_MULTIPLE == 0 and in_features % GGML_QUANT_SIZES[qtype][0] == 0
    return qtype in INT8_QTYPES and in_features % GGML_QUANT_SIZES[qtype][0] == 0


def pack_int4(raw: torch.Tensor, qtype: GGMLQuantizationType, in_features: int) -> Int4Weight:
    """Repack GGUF rows for the int4 kernel. Cost: one pass over W (int32 codes [N, K] as scratch)."""
    if raw.shape[0] % INT4_ROW_MULTIPLE:
        raise ValueError(f"the int4 kernel needs a multiple of {INT4_ROW_MULTIPLE} output rows, got {raw.shape[0]}")
    codes, scale, zero = int4_codes_scales_zeros(raw, qtype, in_features)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 2)
    scales_zeros = torch.stack((scale.t(), zero.t()), dim=-1).to(ACTIVATION_DTYPE).contiguous()
    return Int4Weight(packed, scales_zeros, codes.shape[0], in_features)


def q8_0_values(raw: torch.Tensor, in_features: int) -> torch.Tensor:
    """Q8_0 rows -> float32 [N, K] (d * q per 32-block)."""
    b = _blocks(raw, GGMLQuantizationType.Q8_0, in_features)
    d, q = _f16(b[..., 0:2]), b[..., 2:34].contiguous().view(torch.int8).float()
    return (d[..., None] * q).reshape(b.shape[0], -1)


def pack_int8(raw: torch.Tensor, in_features: int) -> Int8Weight:
    """Q8_0 rows requantized to int8 codes with one bf16 scale per row (max|w| / 127)."""
    return int8_rows(q8_0_values(raw, in_features))


def int8_rows(w: torch.Tensor) -> Int8Weight:
    """Float W [N, K] -> int8 codes with one bf16 scale per row (max|w| / 127). Cost: one pass over W."""
    w = w.detach().float()
    scale = (w.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
    scale = scale.to(ACTIVATION_DTYPE)
    codes = torch.round(w / scale.float()[:, None]).clamp_(-127, 127).to(torch.int8)
    return Int8Weight(codes, scale)


def pack_gguf(raw: torch.Tensor, qtype: GGMLQuantizationType, in_features: int) -> PackedWeight:
    """The packed form of GGUF rows for this qtype; ValueError for types without a CPU kernel."""
    if qtype in INT4_QTYPES:
        return pack_int4(raw, qtype, in_features)
    if qtype in INT8_QTYPES:
        return pack_int8(raw, in_features)
    raise ValueError(f"no packed CPU matmul for {qtype.name} (supported: Q4_0, Q4_1, Q4_K, Q8_0)")
