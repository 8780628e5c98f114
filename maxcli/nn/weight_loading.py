"""Copy checkpoint tensors (HF names) into a model's parameters, filling fused projections shard by shard.

Every parameter carries `weight_loader(param, tensor, shard_id)` and `shard_ids` (empty for plain
parameters) set by the layer that owns it; this module only resolves names and checks completeness.
Cost: one copy per checkpoint tensor; lazy values (`.to_tensor(dtype)`) are materialized one at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from maxcli.nn.linear import check_shape


class TensorSource(Protocol):
    """A lazily read checkpoint tensor (maxcli.weights.WeightData)."""

    def to_tensor(self, dtype: torch.dtype) -> torch.Tensor: ...


# (fused fragment, checkpoint fragment, shard id): ".q_proj." in a checkpoint name loads shard "q" of the
# parameter named with ".qkv_proj." instead.
StackedParam = tuple[str, str, Any]

LLAMA_STACKED_PARAMS: tuple[StackedParam, ...] = (
    (".qkv_proj.", ".q_proj.", "q"),
    (".qkv_proj.", ".k_proj.", "k"),
    (".qkv_proj.", ".v_proj.", "v"),
    (".gate_up_proj.", ".gate_proj.", 0),
    (".gate_up_proj.", ".up_proj.", 1),
)


def materialize(name: str, value: torch.Tensor | TensorSource, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    to_tensor = getattr(value, "to_tensor", None)
    if to_tensor is None:
        raise ValueError(f"weight {name!r} is a {type(value).__name__}, expected a tensor or WeightData")
    return to_tensor(dtype)


def resolve_checkpoint_name(name: str, params: Mapping[str, Any], stacked: Sequence[StackedParam]) -> tuple[str, Any]:
    """(the parameter a checkpoint name loads, its shard id: None for a whole tensor); ValueError if none."""
    if name in params:
        return name, None
    for fused, part, shard_id in stacked:
        if part in name:
            target = name.replace(part, fused, 1)
            if target in params:
                return target, shard_id
    raise ValueError(f"unexpected weight {name!r}: the model has no such parameter")


def checkpoint_targets(
    model: nn.Module,
    names: Iterable[str],
    stacked: Sequence[StackedParam] = (),
    ignore: Iterable[str] = (),
    strict: bool = True,
) -> list[tuple[str, str, Any]]:
    """(checkpoint name, parameter name, shard id or None) for every checkpoint name not ignored.

    A name the model has no parameter for raises ValueError (one line), or is skipped when not strict.
    """
    ignore = tuple(ignore)
    params = dict(model.named_parameters())
    out = []
    for name in names:
        if name.endswith(ignore):
            continue
        try:
            out.append((name, *resolve_checkpoint_name(name, params, stacked)))
        except ValueError:
            if strict:
                raise
    return out


def load_weights(
    model: nn.Module,
    weights: Mapping[str, torch.Tensor | TensorSource],
    stacked: Sequence[StackedParam] = (),
    ignore: Iterable[str] = (),
) -> None:
    """Load every entry of `weights`; names equal to or ending with an `ignore` entry are skipped.

    Raises ValueError (one line) on an unknown name, a wrong shape, or a parameter left unloaded.
    """
    params = dict(model.named_parameters())
    loaded: dict[str, set[Any]] = {n: set() for n in params}
    for name, target, shard_id in checkpoint_targets(model, weights, stacked, ignore):
        value = weights[name]
        param = params[target]
        tensor = materialize(name, value, param.dtype)
        if shard_id is None:
            check_shape(name, param, tensor)
        param.weight_loader(param, tensor, shard_id)
        loaded[target].add(shard_id)
    missing = []
    for n, p in params.items():
        got = loaded[n]
        if None not in got and not (p.shard_ids and got.issuperset(p.shard_ids)):
            missing.append(n if not got else f"{n} (shards {sorted(map(str, set(p.shard_ids) - got))})")
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise ValueError(f"missing weights: {', '.join(missing[:5])}{more}")


def assign_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor], label: str) -> None:
    """Install a complete state dict (names already the model's own) by assignment, no copies: every name
    present, none extra, every shape right, else a one-line ValueError naming `label`. Freezes the model."""
    expected = set(model.state_dict().keys())
    missing, unknown = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unknown:
        raise ValueError(f"{label} checkpoint mismatch: missing {missing[:3]}, unexpected {unknown[:3]}")
    for name, tensor in state.items():
        want = model.get_parameter(name).shape
        if tensor.shape != want:
            raise ValueError(f"{label} weight {name} has shape {tuple(tensor.shape)}, expected {tuple(want)}")
    model.load_state_dict(state, strict=True, assign=True)
    model.requires_grad_(False)
