"""Torch reference of the GGUF weight-only matmul: y = x @ W.T with W [N, K] kept as GGUF blocks.

`raw` is W's bytes as uint8 [N, bytes_per_row]; each row holds K / block_elems whole blocks. The
reference dequantizes all of W to float32 (cost: N * K * 4 bytes of scratch) and runs one matmul;
the Triton kernel (maxcli.kernels.quant_matmul) dequantizes tiles in registers instead.
"""

from __future__ import annotations

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType


def parse_qtype(qtype: GGMLQuantizationType | int | str) -> GGMLQuantizationType:
    """A GGUF quant type from the enum, its integer id, or its name ("Q4_K", "q4_k", SupportedEncoding.q4_k)."""
    if isinstance(qtype, GGMLQuantizationType):
        return qtype
    try:
        if isinstance(qtype, str):
            return GGMLQuantizationType[str(qtype.value if hasattr(qtype, "value") else qtype).upper()]
        return GGMLQuantizationType(int(qtype))
    except (KeyError, ValueError):
        raise ValueError(f"unknown GGUF quantization type {qtype!r}") from None


def check_gguf_matmul_args(
    x: torch.Tensor, raw: torch.Tensor, qtype: GGMLQuantizationType, out_features: int, in_features: int
) -> None:
    """Raise a one-line ValueError unless raw holds out_features rows of in_features `qtype` values."""
    block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
    if in_features % block_elems:
        raise ValueError(f"{qtype.name} needs in_features divisible by {block_elems}, got {in_features}")
    want = (out_features, in_features // block_elems * block_bytes)
    if raw.dtype != torch.uint8 or tuple(raw.shape) != want:
        raise ValueError(
            f"{qtype.name} weight [{out_features}, {in_features}] needs raw uint8 {list(want)}, "
            f"got {raw.dtype} {list(raw.shape)}"
        )
    if x.shape[-1:] != (in_features,):
        raise ValueError(f"x has last dim {tuple(x.shape[-1:])}, expected in_features={in_features}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a float tensor, got {x.dtype}")


def dequantize_rows(raw: torch.Tensor, qtype: GGMLQuantizationType) -> torch.Tensor:
    """float32 [N, K] from raw uint8 [N, bytes_per_row], on raw's device.

    Uses the project's torch dequantizer (maxcli.weights.dequant) when it is installed, else gguf-py's
    numpy one (a host round trip for device tensors).
    """
    try:
        from maxcli.weights.dequant import dequantize
    except ImportError:
        import numpy as np
        from gguf.quants import dequantize as np_dequantize

        values = np_dequantize(np.ascontiguousarray(raw.cpu().numpy()), qtype)
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).to(raw.device)
    return dequantize(raw.contiguous(), qtype)


def gguf_matmul(
    x: torch.Tensor,
    raw: torch.Tensor,
    qtype: GGMLQuantizationType | int | str,
    out_features: int,
    in_features: int,
) -> torch.Tensor:
    """y [..., out_features] = x [..., in_features] @ dequant(raw).T, float32 math, result in x's dtype."""
    qt = parse_qtype(qtype)
    check_gguf_matmul_args(x, raw, qt, out_features, in_features)
    w = dequantize_rows(raw, qt)
    return torch.matmul(x.float(), w.t()).to(x.dtype)
