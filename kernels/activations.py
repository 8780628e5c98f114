"""Gated activations x [..., 2F] -> act(x[..., :F]) * x[..., F:]; contracts of torch_ref.

Grid (rows, cdiv(F, BLOCK)): elementwise, math in float32 with one rounding to x's dtype (the reference
rounds after the activation and again after the product, so 16-bit results may differ by one ulp).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from maxcli.kernels.common import check_float, sigmoid, tanh

SQRT_2_OVER_PI = tl.constexpr(0.7978845608028654)


@triton.jit
def _gated_kernel(x_ptr, y_ptr, s_x, s_y, f, GELU_TANH: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < f
    gate = tl.load(x_ptr + row * s_x + offs, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * s_x + f + offs, mask=mask, other=0.0).to(tl.float32)
    if GELU_TANH:
        inner = SQRT_2_OVER_PI * (gate + 0.044715 * gate * gate * gate)
        act = 0.5 * gate * (1.0 + tanh(inner))
    else:
        act = gate * sigmoid(gate)
    tl.store(y_ptr + row * s_y + offs, (act * up).to(y_ptr.dtype.element_ty), mask=mask)


def _gated(x: torch.Tensor, gelu_tanh: bool) -> torch.Tensor:
    check_float("x", x)
    if x.dim() == 0 or x.shape[-1] % 2:
        raise ValueError(f"gated activation wants x [..., 2F] with an even last dim, got {tuple(x.shape)}")
    f = x.shape[-1] // 2
    x2 = (x if x.stride(-1) == 1 else x.contiguous()).reshape(-1, 2 * f)
    y = x2.new_empty((x2.shape[0], f))
    if y.numel():
        block = min(1024, triton.next_power_of_2(f))
        _gated_kernel[(x2.shape[0], triton.cdiv(f, block))](
            x2, y, x2.stride(0), y.stride(0), f, GELU_TANH=gelu_tanh, BLOCK=block
        )
    return y.view(*x.shape[:-1], f)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    return _gated(x, gelu_tanh=False)


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    return _gated(x, gelu_tanh=True)
