"""GGUF block matmuls on the CPU through maxcli's C++ extension (csrc/gguf_matmul.cpp, built by cpu_ext).

Weights stay raw GGUF bytes (uint8 [rows, bytes_per_row]). Steps of fewer than 16 rows quantize the
activations to int8 per 16 values inside the kernel; larger ones multiply bf16 activations with bf16 row
blocks dequantized on the fly. Either way results differ from a float32 matmul of the dequantized weights
by that rounding: approximate by design, checked by teacher forcing against the float32 path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from gguf import GGMLQuantizationType as Q

from maxcli.ops import cpu_ext

# The types with a block kernel; others (IQ*, TQ*, ...) run dequantized.
KERNEL_QTYPES = frozenset({Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K})


def available() -> bool:
    """Whether the extension is built and loaded (compiling it on the first call)."""
    return cpu_ext.load()


def linear(
    x: torch.Tensor,
    raws: Sequence[torch.Tensor],
    qtypes: Sequence[int],
    rows: Sequence[int],
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x [..., K] float -> [..., sum(rows)] float32: the parts' outputs side by side (+ bias)."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.dtype != torch.float32:
        flat = flat.float()
    y = torch.ops.maxcli_cpu.gguf_linear(flat, list(raws), [int(q) for q in qtypes], [int(r) for r in rows], bias)
    return y.view(*x.shape[:-1], y.shape[-1])


def dequantize(raw: torch.Tensor, qtype: int, in_features: int) -> torch.Tensor:
    """float32 [rows, in_features] from raw rows uint8 [rows, bytes_per_row]."""
    return torch.ops.maxcli_cpu.gguf_dequantize(raw, int(qtype), in_features)


def first_bad_block(raw: torch.Tensor, qtype: int) -> int:
    """Index of the first block whose fp16 scales are Inf/NaN (corrupt data), else -1. Cost: one pass
    over the scale fields."""
    if not available():
        raise RuntimeError(f"maxcli's C++ CPU kernels are unavailable: {cpu_ext.unavailable_reason()}")
    return int(torch.ops.maxcli_cpu.gguf_first_bad_block(raw.contiguous(), int(qtype)))
