"""Linear layers, tensor-parallel by construction. Weights are stored [out_features, in_features] as in HF
checkpoints; every forward is one `F.linear` GEMM (plus one all-reduce for a row-parallel layer when the
group has several ranks).

- `Linear`: replicated on every rank.
- `ColumnParallelLinear` (and the fused `MergedColumnLinear`, `QKVLinear`): each rank holds a slice of the
  output rows and keeps its output local.
- `RowParallelLinear` (o_proj, down_proj): each rank holds a slice of the input columns, multiplies its
  slice of the activations and the ranks' partial sums are all-reduced; the bias is added once, after.

Shapes are taken from `maxcli.distributed.current_group()` when the layer is built. Every checkpoint tensor
reaches a parameter through `param.weight_loader(param, loaded, shard_id)`, which cuts this rank's part out
of the full checkpoint tensor; `param.checkpoint_shape` is the full shape a whole tensor must have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from maxcli.distributed.parallel_state import TensorParallelGroup, current_group


def _frozen(shape: Sequence[int], dtype: torch.dtype) -> nn.Parameter:
    # Inference only: no autograd state; contents arrive through load_weights.
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


def check_shape(name: str, param: torch.Tensor, loaded: torch.Tensor) -> None:
    want = tuple(getattr(param, "checkpoint_shape", param.shape))
    if tuple(loaded.shape) != want:
        raise ValueError(f"weight {name!r} has shape {tuple(loaded.shape)}, expected {want}")


def default_weight_loader(param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
    """Copy a whole tensor into `param` (shapes checked by the caller)."""
    with torch.no_grad():
        param.copy_(loaded)


class Linear(nn.Module):
    """y = x W^T + b, the whole weight on every rank."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        self.tp: TensorParallelGroup = current_group()
        self.in_features, self.out_features = in_features, out_features
        local_out, local_in = self.local_shape(in_features, out_features)
        self.weight = _frozen((local_out, local_in), dtype)
        self.bias = _frozen((self.local_bias_size(local_out, out_features),), dtype) if bias else None
        self.weight.checkpoint_shape = (out_features, in_features)
        if self.bias is not None:
            self.bias.checkpoint_shape = (out_features,)
        for p in self.parameters(recurse=False):
            p.weight_loader = self.weight_loader
            p.shard_ids = ()

    def local_shape(self, in_features: int, out_features: int) -> tuple[int, int]:
        """(rows, columns) of this rank's weight."""
        return out_features, in_features

    def local_bias_size(self, local_out: int, out_features: int) -> int:
        return local_out

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        default_weight_loader(param, loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        tp = f", tp={self.tp.rank}/{self.tp.size}" if self.tp.is_parallel else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{tp}"


class ColumnParallelLinear(Linear):
    """Rank r holds its share of the output rows (`TensorParallelGroup.partition`) of weight and bias; its
    output is that slice."""

    def local_shape(self, in_features: int, out_features: int) -> tuple[int, int]:
        return self.tp.partition(out_features)[1], in_features

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        start, rows = self.tp.partition(self.out_features)
        default_weight_loader(param, loaded.narrow(0, start, rows))


class RowParallelLinear(Linear):
    """Rank r holds input columns `input_range` = (start, count) (default: its partition of in_features);
    its input is the matching slice of activations (the output of a column-parallel layer, e.g. this
    rank's attention heads). Partial products are summed across ranks; the bias is added once, after."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: torch.dtype = torch.float32,
        input_range: tuple[int, int] | None = None,
    ) -> None:
        self.input_range = input_range
        super().__init__(in_features, out_features, bias, dtype)
        if self.input_range is None:
            self.input_range = self.tp.partition(in_features)

    def local_shape(self, in_features: int, out_features: int) -> tuple[int, int]:
        return out_features, (self.input_range or self.tp.partition(in_features))[1]

    def local_bias_size(self, local_out: int, out_features: int) -> int:
        return out_features

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        if param.dim() == 2:
            start, cols = self.input_range
            loaded = loaded.narrow(1, start, cols)
        default_weight_loader(param, loaded)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.tp.is_parallel:
            return F.linear(x, self.weight, self.bias)
        y = self.tp.all_reduce(F.linear(x, self.weight))
        return y if self.bias is None else y + self.bias


class MergedColumnLinear(ColumnParallelLinear):
    """Several column projections of the same input in one GEMM, e.g. gate_proj + up_proj -> gate_up_proj.

    Output columns are the shards' local slices concatenated in order; shard i is loaded from its own
    checkpoint tensor with shard_id i, or the whole fused tensor at once (Phi-3 stores gate_up_proj fused),
    which is cut into the shards by their full sizes first.
    """

    def __init__(
        self,
        in_features: int,
        output_sizes: Sequence[int],
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.output_sizes = list(output_sizes)  # full (checkpoint) sizes
        super().__init__(in_features, sum(self.output_sizes), bias, dtype)
        self.local_sizes = [self.shard_rows(i)[1] for i in range(len(self.output_sizes))]
        self.shard_offsets = [sum(self.local_sizes[:i]) for i in range(len(self.local_sizes))]
        for p in self.parameters(recurse=False):
            p.shard_ids = tuple(range(len(self.output_sizes)))

    def local_shape(self, in_features: int, out_features: int) -> tuple[int, int]:
        return sum(self.shard_rows(i)[1] for i in range(len(self.output_sizes))), in_features

    def shard_rows(self, i: int) -> tuple[int, int]:
        """(first row, rows) of shard i's checkpoint tensor that this rank holds."""
        return self.tp.partition(self.output_sizes[i])

    def shard_index(self, shard_id: object) -> int:
        if not isinstance(shard_id, int) or not 0 <= shard_id < len(self.output_sizes):
            raise ValueError(f"shard id {shard_id!r} out of range for {len(self.output_sizes)} shards")
        return shard_id

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        if shard_id is None:  # the whole fused tensor: cut it by the full shard sizes
            start = 0
            for i, size in enumerate(self.output_sizes):
                self._load_shard(param, i, loaded.narrow(0, start, size))
                start += size
            return
        i = self.shard_index(shard_id)
        full = (self.output_sizes[i],) + tuple(param.shape[1:])
        if tuple(loaded.shape) != full:
            raise ValueError(f"shard {shard_id!r} has shape {tuple(loaded.shape)}, expected {full}")
        self._load_shard(param, i, loaded)

    def _load_shard(self, param: nn.Parameter, i: int, loaded: torch.Tensor) -> None:
        first, rows = self.shard_rows(i)
        with torch.no_grad():
            param.narrow(0, self.shard_offsets[i], rows).copy_(loaded.narrow(0, first, rows))


class QKVLinear(MergedColumnLinear):
    """Fused q/k/v projection: output columns are [q (H*D) | k (Hk*D) | v (Hk*D)] of this rank's heads;
    shard ids "q", "k", "v". Each rank holds the query heads and KV heads `TensorParallelGroup.heads` gives
    it (whole GQA groups, or one replicated KV head when there are fewer KV heads than ranks)."""

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
        self.head_dim, self.total_num_heads, self.total_num_kv_heads = head_dim, num_heads, num_kv_heads
        self.q_start, self.num_heads, self.kv_start, self.num_kv_heads = current_group().heads(num_heads, num_kv_heads)
        super().__init__(hidden_size, [num_heads * head_dim, num_kv_heads * head_dim, num_kv_heads * head_dim], bias, dtype)
        self.q_size, self.kv_size = self.local_sizes[0], self.local_sizes[1]
        for p in self.parameters(recurse=False):
            p.shard_ids = self.SHARDS

    def shard_rows(self, i: int) -> tuple[int, int]:
        if i == 0:
            return self.q_start * self.head_dim, self.num_heads * self.head_dim
        return self.kv_start * self.head_dim, self.num_kv_heads * self.head_dim

    def shard_index(self, shard_id: object) -> int:
        if shard_id not in self.SHARDS:
            raise ValueError(f"qkv shard id must be one of {self.SHARDS}, got {shard_id!r}")
        return self.SHARDS.index(shard_id)

    def forward_split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One GEMM, then views (no copies) of q [T, H*D], k and v [T, Hk*D] (this rank's heads)."""
        return F.linear(x, self.weight, self.bias).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
