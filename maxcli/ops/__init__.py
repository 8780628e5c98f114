"""One function per op. Models call these and never know which implementation ran.

Dispatch: the Triton kernel when the tensors are on CUDA and Triton imports, the torch reference
otherwise. `MAXCLI_OPS=torch|triton` forces one (triton without CUDA is an error unless
TRITON_INTERPRET=1, which runs kernels on CPU tensors for tests).
"""

from __future__ import annotations

from maxcli.ops import torch_ref
from maxcli.ops.torch_ref import (  # noqa: F401  (the public op surface)
    gelu_tanh_and_mul,
    layer_norm,
    paged_attention,
    rms_norm,
    rotary_embedding,
    silu_and_mul,
    store_kvcache,
)

__all__ = [
    "gelu_tanh_and_mul",
    "layer_norm",
    "paged_attention",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "store_kvcache",
    "torch_ref",
]
