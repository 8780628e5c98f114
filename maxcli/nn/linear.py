"""Linear layers. Weights are stored [out_features, in_features] as in HF checkpoints; matmuls go through
`F.linear` (one GEMM per call).

Tensor-parallel shape (not implemented yet, the classes are written so it drops in): a column-parallel
layer shards dim 0 of `weight` (and `bias`) across ranks and keeps its output local; a row-parallel layer
(o_proj, down_proj) shards dim 1 and all-reduces its output. Every checkpoint tensor reaches a parameter
through the parameter's `weight_loader(param, loaded, shard_id)`, which is where a rank would slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _frozen(shape: Sequence[int], dtype: torch.dtype) -> nn.Parameter:
    # Inference only: no autograd state; contents arrive through load_weights.
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


def check_shape(name: str, param: torch.Tensor, loaded: torch.Tensor) -> None:
    if tuple(loaded.shape) != tuple(param.shape):
        raise ValueError(f"weight {name!r} has shape {tuple(loaded.shape)}, expected {tuple(param.shape)}")


def default_weight_loader(param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
    """Copy a whole tensor into `param` (shapes checked by the caller)."""
    with torch.no_grad():
        param.copy_(loaded)


class Linear(nn.Module):
    """y = x W^T + b. Column-parallel ready: shards dim 0 of weight and bias."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _frozen((out_features, in_features), dtype)
        self.bias = _frozen((out_features,), dtype) if bias else None
        for p in self.parameters(recurse=False):
            p.weight_loader = self.weight_loader
            p.shard_ids = ()

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        default_weight_loader(param, loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class MergedColumnLinear(Linear):
    """Several column projections of the same input in one GEMM, e.g. gate_proj + up_proj -> gate_up_proj.

    Output columns are the shards concatenated in order; shard i is loaded from its own checkpoint
    tensor with shard_id i, or the whole fused tensor at once (Phi-3 stores gate_up_proj fused).
    """

    def __init__(
        self,
        in_features: int,
        output_sizes: Sequence[int],
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(in_features, sum(output_sizes), bias, dtype)
        self.output_sizes = list(output_sizes)
        self.shard_offsets = [sum(self.output_sizes[:i]) for i in range(len(self.output_sizes))]
        for p in self.parameters(recurse=False):
            p.shard_ids = tuple(range(len(self.output_sizes)))

    def shard_index(self, shard_id: object) -> int:
        if not isinstance(shard_id, int) or not 0 <= shard_id < len(self.output_sizes):
            raise ValueError(f"shard id {shard_id!r} out of range for {len(self.output_sizes)} shards")
        return shard_id

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        if shard_id is None:
            default_weight_loader(param, loaded)
            return
        i = self.shard_index(shard_id)
        rows = param.narrow(0, self.shard_offsets[i], self.output_sizes[i])
        if tuple(loaded.shape) != tuple(rows.shape):
            raise ValueError(f"shard {shard_id!r} has shape {tuple(loaded.shape)}, expected {tuple(rows.shape)}")
        with torch.no_grad():
            rows.copy_(loaded)


class QKVLinear(MergedColumnLinear):
    """Fused q/k/v projection: output columns are [q (H*D) | k (Hk*D) | v (Hk*D)]; shard ids "q", "k", "v".

    Tensor-parallel: each rank would hold H/tp query heads and max(1, Hk/tp) KV heads.
    """

    SHARDS = ("q", "k", "v")

    def __init__(
        self,
        hidden_size: int,
        head_dim: int,
        num_heads: int,
        num_kv_heads: int,
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        q, kv = num_heads * head_dim, num_kv_heads * head_dim
        super().__init__(hidden_size, [q, kv, kv], bias, dtype)
        self.q_size, self.kv_size = q, kv
        for p in self.parameters(recurse=False):
            p.shard_ids = self.SHARDS

    def shard_index(self, shard_id: object) -> int:
        if shard_id not in self.SHARDS:
            raise ValueError(f"qkv shard id must be one of {self.SHARDS}, got {shard_id!r}")
        return self.SHARDS.index(shard_id)

    def forward_split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One GEMM, then views (no copies) of q [T, H*D], k and v [T, Hk*D]."""
        return F.linear(x, self.weight, self.bias).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
