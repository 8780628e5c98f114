"""RMSNorm over the last dim, with the residual add fused in (one op instead of add + norm)."""

from __future__ import annotations

import torch
from torch import nn

from maxcli import ops
from maxcli.nn.linear import default_weight_loader


class RMSNorm(nn.Module):
    """y = x / rms(x) * (weight + weight_offset), computed in float32, returned in x's dtype.

    weight_offset=1.0 is Gemma's (1 + w) form; its checkpoints store w around 0.
    forward(x) -> y; forward(x, residual) -> (norm(x + residual), x + residual).
    """

    def __init__(
        self, dim: int, eps: float = 1e-6, weight_offset: float = 0.0, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.dim, self.eps, self.weight_offset = dim, eps, weight_offset
        init = torch.zeros(dim, dtype=dtype) if weight_offset else torch.ones(dim, dtype=dtype)
        self.weight = nn.Parameter(init, requires_grad=False)
        self.weight.weight_loader = default_weight_loader
        self.weight.shard_ids = ()

    def forward(
        self, x: torch.Tensor, residual: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        return ops.rms_norm(x, self.weight, self.eps, residual=residual, weight_offset=self.weight_offset)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, weight_offset={self.weight_offset}"


class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last dim (bias optional)."""

    def __init__(self, dim: int, eps: float = 1e-5, use_bias: bool = True, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(dim, dtype=dtype), requires_grad=False) if use_bias else None
        for p in (self.weight, self.bias):
            if p is not None:
                p.weight_loader = default_weight_loader
                p.shard_ids = ()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.dim}, eps={self.eps}, bias={self.bias is not None}"
