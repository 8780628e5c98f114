"""LoRA on the model's projections, several adapters in one batch (a segment-grouped LoRA matmul).

`install_lora_layers` wraps each attention / MLP projection (plain, fused q/k/v or gate/up, or GGUF
blocks) in a LoRALinear that keeps the base layer untouched and holds, per adapter slot s, A_s
[J*r, in] and B_s^T [J*r, out] for the layer's J fused projections (B block-diagonal, the adapter's
scaling folded in). Per step, `lora_rows(idx)` names each packed token row's slot (-1: base model).

The grouped matmul: every slot's A stacked, [S*J*r, in], so one GEMM gives each row its projection onto
all slots' adapters; a per-step 0/1 mask keeps each row's own slot's columns (none for base rows); one
GEMM with every slot's B^T stacked adds the deltas. Cost per layer and step: two GEMMs of width S*J*r
(small next to the base GEMM) and one multiply, however many adapters the step mixes; base-only steps pay
one context-variable read per layer.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from maxcli.nn.linear import QKVLinear
from maxcli.nn.weight_loading import resolve_checkpoint_name

class _StepRows:
    """A step's row slots, and the column masks derived from them (one per block width, built once)."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows
        self.slots = set(torch.unique(rows[rows >= 0]).tolist())
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def mask(self, num_slots: int, width: int, dtype: torch.dtype) -> torch.Tensor:
        """[T, num_slots*width]: 1 where a column belongs to the row's slot."""
        key = (num_slots, width)
        if key not in self._masks:
            col_slot = torch.arange(num_slots, device=self.rows.device).repeat_interleave(width)
            self._masks[key] = (self.rows[:, None] == col_slot[None, :]).to(dtype)
        return self._masks[key]


_ROWS: contextvars.ContextVar[_StepRows | None] = contextvars.ContextVar("lora_rows", default=None)

# Projections a LoRA adapter may target, by the last component of the module name (HF names and the fused
# modules that hold them).
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj", "up_proj", "down_proj",
               "gate_up_proj")


@contextlib.contextmanager
def lora_rows(rows: torch.Tensor | None) -> Iterator[None]:
    """Slot of each packed token row [T] int64 (-1: no adapter) for the forwards inside."""
    token = _ROWS.set(None if rows is None else _StepRows(rows))
    try:
        yield
    finally:
        _ROWS.reset(token)


def current_rows() -> torch.Tensor | None:
    """The slots set by the innermost `lora_rows` (None outside one, or for a step without adapters)."""
    step = _ROWS.get()
    return None if step is None else step.rows


class LoRALinear(nn.Module):
    """base(x) plus each row's adapter delta. `split_sizes`: output widths of the fused projections."""

    def __init__(self, base: nn.Module, in_features: int, split_sizes: Sequence[int], num_slots: int, max_rank: int) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features, self.split_sizes = in_features, [int(s) for s in split_sizes]
        self.out_features = sum(self.split_sizes)
        self.max_rank, J = max_rank, len(self.split_sizes)
        self.register_buffer("lora_a", torch.zeros(num_slots, J * max_rank, in_features), persistent=False)
        self.register_buffer("lora_b", torch.zeros(num_slots, J * max_rank, self.out_features), persistent=False)  # B^T
        # rank of slot s's adapter on fused part j (0: the part is not targeted); the fused CPU decode step
        # (maxcli.nn.fused_decode) bounds its loops by it
        self.register_buffer("ranks", torch.zeros(num_slots, J, dtype=torch.int32), persistent=False)
        self.active = [False] * num_slots  # slot s has a non-zero delta in this layer

    def set_slot(self, slot: int, parts: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Slot `slot` := the adapter's (A [r, in], B [out_j, r] with scaling applied) for fused parts j."""
        self.clear_slot(slot)
        r0, offsets = self.max_rank, [sum(self.split_sizes[:j]) for j in range(len(self.split_sizes))]
        for j, (a, b) in parts.items():
            r = a.shape[0]
            self.lora_a[slot, j * r0 : j * r0 + r].copy_(a)
            self.lora_b[slot, j * r0 : j * r0 + r, offsets[j] : offsets[j] + self.split_sizes[j]].copy_(b.T)
            self.ranks[slot, j] = r
        self.active[slot] = bool(parts)

    def clear_slot(self, slot: int) -> None:
        self.lora_a[slot].zero_()
        self.lora_b[slot].zero_()
        self.ranks[slot].zero_()
        self.active[slot] = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        step = _ROWS.get()
        if step is None or not any(self.active[s] for s in step.slots):
            return y
        S, width, _ = self.lora_a.shape
        a = self.lora_a.view(S * width, self.in_features)
        b = self.lora_b.view(S * width, self.out_features)
        h = (x.to(a.dtype) @ a.T) * step.mask(S, width, a.dtype)
        return y + (h @ b).to(y.dtype)

    def forward_split(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.forward(x).split(self.split_sizes, dim=-1)

    def extra_repr(self) -> str:
        return f"slots={self.lora_a.shape[0]}, max_rank={self.max_rank}, splits={self.split_sizes}"


def _split_sizes(layer: nn.Module) -> list[int]:
    sizes = getattr(layer, "split_sizes", None) or getattr(layer, "local_sizes", None)
    return list(sizes) if sizes else [int(layer.out_features)]


def install_lora_layers(model: nn.Module, num_slots: int, max_rank: int) -> dict[str, LoRALinear]:
    """Wrap every attention / MLP projection of `model` (by module name) in a LoRALinear; returns them."""
    wrapped: dict[str, LoRALinear] = {}
    for name, layer in list(model.named_modules()):
        if name.rpartition(".")[2] not in PROJECTIONS or not hasattr(layer, "in_features"):
            continue
        lora = LoRALinear(layer, int(layer.in_features), _split_sizes(layer), num_slots, max_rank)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, lora)
        wrapped[name] = lora
    return wrapped


def fused_target(name: str, layers: dict[str, Any], stacked: Sequence[tuple[str, str, Any]]) -> tuple[str, int] | None:
    """(our module name, fused part index) of a checkpoint module name (`...self_attn.q_proj`), or None:
    the loader's own name resolution (maxcli.nn.weight_loading) over the wrapped layers' weights."""
    try:
        target, shard_id = resolve_checkpoint_name(f"{name}.weight", {f"{n}.weight": None for n in layers}, stacked)
    except ValueError:
        return None
    part = 0 if shard_id is None else shard_id if isinstance(shard_id, int) else QKVLinear.SHARDS.index(shard_id)
    return target.removesuffix(".weight"), part
