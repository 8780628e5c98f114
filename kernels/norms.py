"""rms_norm (optional fused residual add, Gemma's 1 + w offset) and layer_norm; contracts of torch_ref.

Grid (rows,): one program normalizes one row of N <= BLOCK features held in registers, statistics in
float32. With a residual, x + residual is rounded to x's dtype first (the value the next layer sees) and
that rounded sum is normalized, exactly as the reference does.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from maxcli.kernels.common import check_float, check_last_dim_contiguous, next_pow2

MAX_FEATURES = 65536  # one row must fit one program's registers


@triton.jit
def _rms_norm_kernel(
    x_ptr, res_ptr, w_ptr, y_ptr, sum_ptr, s_x, s_res, s_y, s_sum, n, eps, weight_offset,
    HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + row * s_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * s_res + offs, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * s_sum + offs, x, mask=mask)
    xf = x.to(tl.float32)
    inv_rms = 1.0 / tl.sqrt(tl.sum(xf * xf, 0) / n + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32) + weight_offset
    tl.store(y_ptr + row * s_y + offs, (xf * inv_rms * w).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _layer_norm_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, s_x, s_y, n, eps, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + row * s_x + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, 0) / n
    centered = tl.where(mask, x - mean, 0.0)
    inv_std = 1.0 / tl.sqrt(tl.sum(centered * centered, 0) / n + eps)
    y = centered * inv_std * tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        y = y + tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * s_y + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def _rows(name: str, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., N] as a [rows, N] view (a copy only if the leading dims cannot be flattened)."""
    check_float(name, x)
    check_float("weight", weight)
    n = x.shape[-1]
    if weight.shape != (n,):
        raise ValueError(f"{name} has {n} features but weight has shape {tuple(weight.shape)}")
    check_last_dim_contiguous("weight", weight)
    if n > MAX_FEATURES:
        raise ValueError(f"norm kernels handle at most {MAX_FEATURES} features, got {n}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x.reshape(-1, n)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    weight_offset: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    x2 = _rows("x", x, weight)
    if residual is not None:
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} differs from x {tuple(x.shape)}")
        if residual.dtype != x.dtype:
            raise ValueError(f"residual dtype {residual.dtype} differs from x dtype {x.dtype}")
        res2 = residual.contiguous().reshape(x2.shape)
        summed = torch.empty_like(x2)
    else:
        res2, summed = x2, x2  # unused by the kernel when HAS_RESIDUAL is False
    y = torch.empty_like(x2)
    if x2.shape[0]:
        _rms_norm_kernel[(x2.shape[0],)](
            x2, res2, weight, y, summed, x2.stride(0), res2.stride(0), y.stride(0), summed.stride(0),
            x2.shape[1], float(eps), float(weight_offset),
            HAS_RESIDUAL=residual is not None, BLOCK=next_pow2(x2.shape[1]),
        )
    y = y.view(x.shape)
    return (y, summed.view(x.shape)) if residual is not None else y


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    x2 = _rows("x", x, weight)
    if bias is not None:
        if bias.shape != weight.shape:
            raise ValueError(f"layer_norm bias shape {tuple(bias.shape)} differs from weight {tuple(weight.shape)}")
        check_last_dim_contiguous("bias", bias)
    y = torch.empty_like(x2)
    if x2.shape[0]:
        _layer_norm_kernel[(x2.shape[0],)](
            x2, weight, weight if bias is None else bias, y, x2.stride(0), y.stride(0), x2.shape[1], float(eps),
            HAS_BIAS=bias is not None, BLOCK=next_pow2(x2.shape[1]),
        )
    return y.view(x.shape)
