"""GGUF-native layers: projections and embeddings whose weights stay the file's raw blocks.

`swap_gguf_layers(module, weights, stacked, ignore)` runs after a module is built and before its weights
load (gpt-fast's module swap, installed by the loader; model files know nothing of it). Every Linear whose
checkpoint tensors are all GGUF blocks of types with a block kernel becomes a `GGUFLinear` over those
bytes (a fused projection keeps one part per checkpoint tensor, each of its own type: Q4_K_M stores
attn_v as Q6_K beside Q4_K q and k), and a quantized token embedding becomes a `GGUFEmbedding` (rows
dequantized on lookup; as the tied LM head, a block matmul). The consumed tensors are removed from the
mapping the module then loads, so no float copy of them is ever made: the float parameters the module was
built with are released untouched (never written, so never resident).

Memory: the weights' file bytes (+ float biases). Numerics: activations are int8-quantized per 32 values
inside the kernels (maxcli.ops.gguf_cpu), as llama.cpp does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from maxcli import ops
from maxcli.nn.embedding import Embedding
from maxcli.nn.linear import Linear
from maxcli.nn.weight_loading import StackedParam, checkpoint_targets, materialize


class GGUFLinear(nn.Module):
    """y = x [W_0; W_1; ...]^T + b with each W_i raw GGUF rows (uint8 [rows_i, bytes_per_row_i]) of type
    qtypes[i]. `split_sizes` are the output widths `forward_split` returns views of (q, k, v)."""

    def __init__(
        self,
        in_features: int,
        raws: Sequence[torch.Tensor],
        qtypes: Sequence[Any],
        rows: Sequence[int],
        bias: torch.Tensor | None = None,
        split_sizes: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, int(sum(rows))
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"bias has shape {tuple(bias.shape)}, expected ({self.out_features},)")
        self.qtypes, self.rows = [ops.quant_matmul.parse_qtype(q) for q in qtypes], [int(r) for r in rows]
        for i, raw in enumerate(raws):
            self.register_buffer(f"blocks_{i}", raw.contiguous())
        self.register_buffer("bias", None if bias is None else bias.float().contiguous())
        self.split_sizes = list(split_sizes) or [self.out_features]

    @property
    def raws(self) -> list[torch.Tensor]:
        return [getattr(self, f"blocks_{i}") for i in range(len(self.rows))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = ops.gguf_linear(x, self.raws, self.qtypes, self.rows, self.bias)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def forward_split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """One matmul, then views of each fused shard's columns."""
        return self.forward(x).split(self.split_sizes, dim=-1)

    def extra_repr(self) -> str:
        types = "+".join(q.name for q in self.qtypes)
        return f"in_features={self.in_features}, out_features={self.out_features}, {types}, bias={self.bias is not None}"


class GGUFEmbedding(nn.Module):
    """Token embedding over raw GGUF rows [vocab, bytes_per_row]: a lookup dequantizes the rows it reads;
    `logits(hidden)` (a tied LM head or an untied `lm_head` swapped the same way) is one block matmul."""

    def __init__(self, raw: torch.Tensor, qtype: Any, embedding_dim: int) -> None:
        super().__init__()
        self.qtype = ops.quant_matmul.parse_qtype(qtype)
        self.num_embeddings, self.embedding_dim = raw.shape[0], embedding_dim
        self.register_buffer("blocks", raw.contiguous())

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        rows = self.blocks.index_select(0, input_ids.reshape(-1))
        return ops.gguf_dequantize(rows, self.qtype, self.embedding_dim).view(*input_ids.shape, self.embedding_dim)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return ops.gguf_linear(hidden, [self.blocks], [self.qtype], [self.num_embeddings])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, {self.qtype.name}"


def _checked_blocks(value: Any) -> torch.Tensor:
    """The tensor's raw blocks; a one-line ValueError when a block's scale is not finite (corrupt data)."""
    from maxcli.ops.gguf_cpu import first_bad_block

    raw = value.raw_blocks().contiguous()
    bad = first_bad_block(raw, value.qtype)
    if bad >= 0:
        where = f" in {value.source}" if getattr(value, "source", "") else ""
        raise ValueError(f"{value.name}{where}: block {bad} of its {value.qtype.name} data has a non-finite scale (corrupt file)")
    return raw


def _block_source(value: Any) -> bool:
    """A lazy GGUF tensor whose stored blocks a kernel reads as they are (no offset, a kernel type)."""
    from maxcli.ops.gguf_cpu import KERNEL_QTYPES

    return getattr(value, "is_quantized", False) and not getattr(value, "_offset", 0.0) and value.qtype in KERNEL_QTYPES


def swap_gguf_layers(
    model: nn.Module,
    weights: Mapping[str, Any],
    stacked: Sequence[StackedParam] = (),
    ignore: Iterable[str] = (),
) -> dict[str, Any]:
    """Swap the model's block-quantized Linear and Embedding layers (see the module docstring); returns
    the mapping still to load (the swapped layers' tensors removed). Cost: one read of each tensor's bytes."""
    sources: dict[str, dict[Any, str]] = {}  # parameter name -> shard id -> checkpoint name
    for name, target, shard_id in checkpoint_targets(model, weights, stacked, ignore, strict=False):
        sources.setdefault(target, {})[shard_id] = name
    consumed: set[str] = set()
    for module_name, layer in list(model.named_modules()):
        names = sources.get(f"{module_name}.weight", {})
        if isinstance(layer, Linear) and not layer.tp.is_parallel:
            swapped = _gguf_linear(layer, module_name, names, weights, sources)
        elif isinstance(layer, Embedding) and not layer.tp.is_parallel and set(names) == {None} and _block_source(weights[names[None]]):
            w = weights[names[None]]
            swapped = GGUFEmbedding(_checked_blocks(w), w.qtype, layer.embedding_dim)
        else:
            continue
        if swapped is None:
            continue
        parent, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent), child, swapped)
        consumed.update(names.values())
        consumed.update(sources.get(f"{module_name}.bias", {}).values())
    return {k: v for k, v in weights.items() if k not in consumed}


def _gguf_linear(
    layer: Linear, module_name: str, names: Mapping[Any, str], weights: Mapping[str, Any], sources: Mapping[str, Any]
) -> GGUFLinear | None:
    shard_ids = tuple(getattr(layer.weight, "shard_ids", ()))
    order = [None] if None in names else list(shard_ids)
    if not order or set(names) != set(order) or not all(_block_source(weights[names[s]]) for s in order):
        return None
    parts = [weights[names[s]] for s in order]
    if any(p.shape[-1] != layer.in_features for p in parts) or sum(p.shape[0] for p in parts) != layer.out_features:
        return None  # e.g. a fused tensor cut differently: the float loader reports it
    bias = None
    if layer.bias is not None:
        bias_names = sources.get(f"{module_name}.bias", {})
        if None in bias_names:
            bias = materialize(bias_names[None], weights[bias_names[None]], torch.float32)
        elif shard_ids and set(bias_names) == set(shard_ids):
            bias = torch.cat([materialize(bias_names[s], weights[bias_names[s]], torch.float32) for s in shard_ids])
        else:
            return None
    split = getattr(layer, "local_sizes", None) if shard_ids else None
    return GGUFLinear(
        layer.in_features, [_checked_blocks(p) for p in parts], [p.qtype for p in parts], [p.shape[0] for p in parts],
        bias, split or (),
    )
