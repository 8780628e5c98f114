"""Launch helpers shared by the kernels: compute dtypes, block sizes, argument checks."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def interpreting() -> bool:
    """True when kernels run on CPU tensors through Triton's interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def dot_dtype(dtype: torch.dtype) -> tl.dtype:
    """Operand dtype for tl.dot: the tensor's own 16-bit type on a GPU (tensor cores), float32 under the
    interpreter, which would otherwise compute on the raw bits of bf16/fp16 values."""
    if dtype not in _TL_DTYPES:
        raise ValueError(f"unsupported dtype {dtype}: expected float32, bfloat16 or float16")
    return tl.float32 if interpreting() else _TL_DTYPES[dtype]


def dot_precision(dtype: torch.dtype) -> str:
    """float32 operands use exact IEEE products (not TF32) so results match the torch reference."""
    return "ieee" if dtype == torch.float32 or interpreting() else "tf32"


@triton.jit
def tanh(x):
    """tanh without overflow: exp of a non-positive argument only."""
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp of a non-positive argument only."""
    e = tl.exp(-tl.abs(x))
    return tl.where(x < 0, e, 1.0) / (1.0 + e)


def next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(1, int(n)))


def check_float(name: str, t: torch.Tensor) -> None:
    if t.dtype not in _TL_DTYPES:
        raise ValueError(f"{name} has dtype {t.dtype}: expected float32, bfloat16 or float16")


def check_last_dim_contiguous(name: str, t: torch.Tensor) -> None:
    if t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dim (stride {t.stride(-1)})")
