"""Weight-only quantized linear layers for CPU: GGUF blocks kept packed, multiplied by torch's int4 / int8
kernels (maxcli.ops.cpu_quant). Approximate (bf16 activations around the matmul), so opt-in:
PipelineConfig.cpu_quantized_matmul.

`quantize_linears(model, weights, ...)` runs after a normal load and swaps every Linear (fused QKV and
gate/up included) whose checkpoint tensors are all GGUF blocks of one supported type for a
QuantizedLinear built from those raw blocks; the dequantized float weights are then freed. Layers with
float, mixed-type or unsupported sources keep the exact float path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from maxcli.nn.linear import Linear
from maxcli.nn.weight_loading import StackedParam, checkpoint_targets
from maxcli.ops.cpu_quant import (
    ACTIVATION_DTYPE,
    PACKED_QTYPES,
    Int4Weight,
    Int8Weight,
    PackedWeight,
    int4_matmul,
    int8_matmul,
    pack_gguf,
    packable,
)


# From this many rows a bf16 GEMM on a dense copy beats the packed kernels on this CPU class (measured,
# 2 cores, avx512_bf16: int4 saturates near 320 GFLOPS from 8 rows on, dense bf16 reaches 750-900).
DENSE_MIN_ROWS = 12


class QuantizedLinear(nn.Module):
    """y = x W^T + b with W packed (Int4Weight or Int8Weight); the packed tensors are buffers.

    `split_sizes` (the fused shards' widths, e.g. [q, kv, kv]) makes `forward_split` return views of one
    matmul, like QKVLinear.forward_split. `dense` (optional bf16 [out, in], the same weights) serves inputs
    of DENSE_MIN_ROWS rows or more (prefill, large decode batches): compute-bound there, not
    bandwidth-bound, so the packed kernels' dequantization work costs more than reading 2 bytes a weight.
    Memory: 2 bytes per weight beside the packed ~0.56.
    """

    def __init__(
        self,
        weight: PackedWeight,
        bias: torch.Tensor | None = None,
        split_sizes: Sequence[int] = (),
        dense: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = weight.in_features, weight.out_features
        if split_sizes and sum(split_sizes) != self.out_features:
            raise ValueError(f"split sizes {list(split_sizes)} do not add up to out_features={self.out_features}")
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({self.out_features},)")
        self.split_sizes = list(split_sizes)
        # Buffers (codes, then scales) so state_dict and .to() see plain tensors; forward passes them on.
        self.int4 = isinstance(weight, Int4Weight)
        if isinstance(weight, Int4Weight):
            self.register_buffer("codes", weight.packed)
            self.register_buffer("scales", weight.scales_zeros)
        else:
            self.register_buffer("codes", weight.codes)
            self.register_buffer("scales", weight.scales)
        self.register_buffer("bias", bias)
        if dense is not None and tuple(dense.shape) != (self.out_features, self.in_features):
            raise ValueError(f"dense weight has shape {tuple(dense.shape)}, expected ({self.out_features}, {self.in_features})")
        self.register_buffer("dense", None if dense is None else dense.to(ACTIVATION_DTYPE))

    @property
    def weight(self) -> PackedWeight:
        if self.int4:
            return Int4Weight(self.codes, self.scales, self.out_features, self.in_features)
        return Int8Weight(self.codes, self.scales)

    @classmethod
    def from_linear(cls, linear: Linear, weight: PackedWeight, keep_dense: bool = False) -> "QuantizedLinear":
        """Replace `linear`: same shape, its (already loaded) bias, its fused output split if any; with
        `keep_dense`, a bf16 copy of its float weight for many-row inputs."""
        if (weight.out_features, weight.in_features) != (linear.out_features, linear.in_features):
            raise ValueError(
                f"packed weight is [{weight.out_features}, {weight.in_features}], "
                f"layer is [{linear.out_features}, {linear.in_features}]"
            )
        bias = None if linear.bias is None else linear.bias.detach().clone()
        dense = linear.weight.detach().to(ACTIVATION_DTYPE) if keep_dense else None
        return cls(weight, bias, getattr(linear, "output_sizes", ()), dense)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.dense is not None and x.numel() >= DENSE_MIN_ROWS * self.in_features:
            y = F.linear(x.to(ACTIVATION_DTYPE), self.dense).to(x.dtype)
        else:
            y = (int4_matmul if self.int4 else int8_matmul)(x, self.codes, self.scales)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def forward_split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One matmul, then views of each fused shard's columns."""
        if not self.split_sizes:
            raise ValueError("forward_split needs a fused layer (split_sizes)")
        return self.forward(x).split(self.split_sizes, dim=-1)

    def extra_repr(self) -> str:
        kind = "int4" if self.int4 else "int8"
        dense = self.dense is not None
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}, dense={dense}, bias={self.bias is not None}"


def _ordered_sources(linear: Linear, sources: Mapping[Any, Any]) -> list[Any] | None:
    """The checkpoint tensors of `linear.weight` in output-row order, or None if incomplete."""
    if None in sources:
        return [sources[None]]
    shard_ids = getattr(linear.weight, "shard_ids", ())
    if not shard_ids or set(sources) != set(shard_ids):
        return None
    return [sources[s] for s in shard_ids]


def _packable_qtype(values: Iterable[Any]) -> Any:
    """The single supported GGUF type shared by every source, else None (float, mixed, offset-adjusted)."""
    qtypes = set()
    for v in values:
        if not getattr(v, "is_quantized", False) or getattr(v, "_offset", 0.0):
            return None
        qtypes.add(v.qtype)
    return qtypes.pop() if len(qtypes) == 1 and qtypes <= PACKED_QTYPES else None


def quantize_linears(
    model: nn.Module,
    weights: Mapping[str, Any],
    stacked: Sequence[StackedParam] = (),
    ignore: Iterable[str] = (),
    skip: Iterable[str] = (),
    keep_dense: bool = False,
) -> list[str]:
    """Swap packable Linear layers of a loaded model for QuantizedLinear; returns the swapped layer names.

    `weights` is the mapping the model was loaded from (lazy maxcli.weights.WeightData); `stacked` and
    `ignore` are the model's load_weights arguments; modules named in `skip` (e.g. "lm_head", whose weight
    a model reads directly) are left alone; `keep_dense` keeps a bf16 copy of each swapped layer's float
    weight for many-row inputs (QuantizedLinear.dense). Cost: one read of each packed tensor's raw blocks.
    """
    by_param: dict[str, dict[Any, Any]] = {}
    for name, target, shard_id in checkpoint_targets(model, weights, stacked, ignore, strict=False):
        by_param.setdefault(target, {})[shard_id] = weights[name]
    skip = set(skip)
    swapped = []
    for module_name, linear in list(model.named_modules()):
        if not isinstance(linear, Linear) or module_name in skip:
            continue
        sources = _ordered_sources(linear, by_param.get(f"{module_name}.weight", {}))
        qtype = None if sources is None else _packable_qtype(sources)
        if qtype is None or not packable(qtype, linear.out_features, linear.in_features):
            continue
        raw = torch.cat([s.raw_blocks() for s in sources], dim=0)
        quantized = QuantizedLinear.from_linear(linear, pack_gguf(raw, qtype, linear.in_features), keep_dense)
        parent_name, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, quantized)
        swapped.append(module_name)
    return swapped
