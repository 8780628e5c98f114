"""A Qwen3 decoder used as an embedding model (Qwen3-Embedding): one dense causal forward, no KV cache.

The whole padded batch [B, L] runs at once; a causal & key-padding mask (and a sliding window on the
layers that have one) keeps each row independent of the others. Rows must be right-padded: positions
count from 0 in every row. Projections are fused (q/k/v in one matmul, gate/up in another).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from maxcli.nn.weight_loading import assign_state_dict
from maxcli.ops import rms_norm, rotary_embedding, silu_and_mul

if TYPE_CHECKING:
    from transformers import Qwen3Config

# Rope types whose frequencies depend on the sequence length at run time; a one-shot cache cannot hold them.
_DYNAMIC_ROPE = {"dynamic", "longrope"}


def _rope_inverse_frequencies(config: Qwen3Config, head_dim: int) -> tuple[torch.Tensor, float]:
    """(inv_freq [head_dim/2], attention scaling of cos/sin) for the config's rope type."""
    params = getattr(config, "rope_parameters", None) or {}
    rope_type = params.get("rope_type", "default")
    if rope_type == "default":
        theta = params.get("rope_theta", getattr(config, "rope_theta", 10000.0))
        return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)).float(), 1.0
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if rope_type in _DYNAMIC_ROPE or rope_type not in ROPE_INIT_FUNCTIONS:
        raise ValueError(f"rope_type {rope_type!r} is not supported for decoder embeddings")
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, "cpu")
    return inv_freq.float(), float(scaling)


class _RMSNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, dtype=dtype), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class _Qwen3Layer(nn.Module):
    def __init__(self, config: Qwen3Config, layer_index: int, dtype: torch.dtype) -> None:
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.num_heads, self.num_kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or h // self.num_heads
        q_size, kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        self.split = (q_size, kv_size, kv_size)
        layer_types = getattr(config, "layer_types", None) or []
        sliding = layer_index < len(layer_types) and layer_types[layer_index] == "sliding_attention"
        self.sliding_window: int | None = config.sliding_window if sliding else None
        self.input_norm = _RMSNorm(h, eps, dtype)
        self.qkv = nn.Linear(h, sum(self.split), bias=config.attention_bias, dtype=dtype)
        self.q_norm = _RMSNorm(self.head_dim, eps, dtype)
        self.k_norm = _RMSNorm(self.head_dim, eps, dtype)
        self.o_proj = nn.Linear(q_size, h, bias=config.attention_bias, dtype=dtype)
        self.post_attention_norm = _RMSNorm(h, eps, dtype)
        self.gate_up = nn.Linear(h, 2 * config.intermediate_size, bias=False, dtype=dtype)
        self.down = nn.Linear(config.intermediate_size, h, bias=False, dtype=dtype)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, cos_sin: torch.Tensor, masks: dict[int | None, torch.Tensor]
    ) -> torch.Tensor:
        """x [B, L, H]; positions [B*L]; masks: bool [B, 1, L, L] keyed by sliding window (None = full)."""
        b, length, _ = x.shape
        q, k, v = self.qkv(self.input_norm(x)).split(self.split, dim=-1)
        q = self.q_norm(q.reshape(b * length, self.num_heads, self.head_dim))
        k = self.k_norm(k.reshape(b * length, self.num_kv_heads, self.head_dim))
        q, k = rotary_embedding(positions, q, k, cos_sin, is_neox=True)
        q = q.view(b, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=masks[self.sliding_window], enable_gqa=self.num_heads != self.num_kv_heads
        )
        x = x + self.o_proj(o.transpose(1, 2).reshape(b, length, -1))
        return x + self.down(silu_and_mul(self.gate_up(self.post_attention_norm(x))))


class Qwen3EmbeddingModel(nn.Module):
    """forward(input_ids [B, L], attention_mask [B, L], token_type_ids=None) -> last_hidden_state [B, L, H].

    The output is HF Qwen3Model's last_hidden_state (after the final norm). Parameters are created on the
    meta device and materialized by load_weights.
    """

    causal = True  # last-token pooling unless the folder's pooling files say otherwise

    def __init__(self, config: Qwen3Config, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if config.hidden_act != "silu":
            raise ValueError(f"Qwen3 hidden_act {config.hidden_act!r} is not supported (expected 'silu')")
        if config.num_attention_heads % config.num_key_value_heads:
            raise ValueError("Qwen3 num_attention_heads must be a multiple of num_key_value_heads")
        self.config = config
        self.dtype = dtype
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.inv_freq, self.rope_scaling = _rope_inverse_frequencies(config, head_dim)
        with torch.device("meta"):
            self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
            self.layers = nn.ModuleList(_Qwen3Layer(config, i, dtype) for i in range(config.num_hidden_layers))
            self.norm = _RMSNorm(config.hidden_size, config.rms_norm_eps, dtype)
        self.requires_grad_(False)

    def load_weights(self, weights: Mapping[str, Any]) -> None:
        """Load HF Qwen3 weights (names with or without "model."); lm_head is ignored.

        Values are tensors or objects with .to_tensor(dtype). Raises ValueError on missing or unknown names.
        """
        state = convert_qwen3_state_dict(weights, self.dtype)
        assign_state_dict(self, state, "Qwen3")

    def _masks(self, key_valid: torch.Tensor) -> dict[int | None, torch.Tensor]:
        """Causal & key-padding mask [B, 1, L, L] per distinct sliding window. Cost: B*L*L bools each."""
        length = key_valid.shape[1]
        pos = torch.arange(length, device=key_valid.device)
        causal = pos[None, :] <= pos[:, None]  # [L(query), L(key)]
        masks: dict[int | None, torch.Tensor] = {}
        for window in {layer.sliding_window for layer in self.layers}:
            allowed = causal if window is None else causal & (pos[None, :] > pos[:, None] - window)
            masks[window] = allowed[None, None] & key_valid[:, None, None, :]
        return masks

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,  # accepted for a common signature; decoders have none
    ) -> torch.Tensor:
        if self.embed_tokens.weight.is_meta:
            raise RuntimeError("Qwen3EmbeddingModel has no weights yet: call load_weights first")
        b, length = input_ids.shape
        key_valid = attention_mask.to(torch.bool)
        if not bool(key_valid[:, 0].all()):
            raise ValueError("attention_mask must be right-padded with a real first token in every row")
        dev = input_ids.device
        pos = torch.arange(length, device=dev)
        freqs = pos[:, None].float() * self.inv_freq.to(dev)[None, :]
        cos_sin = torch.cat((freqs.cos(), freqs.sin()), dim=-1) * self.rope_scaling  # [L, head_dim]
        positions = pos.repeat(b)
        masks = self._masks(key_valid)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, positions, cos_sin, masks)
        return self.norm(x)


_LAYER_NAME = re.compile(r"^layers\.(\d+)\.(.+)$")
_LAYER_RENAMES: dict[str, str] = {
    "input_layernorm.weight": "input_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "self_attn.q_norm.weight": "q_norm.weight",
    "self_attn.k_norm.weight": "k_norm.weight",
    "self_attn.o_proj.weight": "o_proj.weight",
    "self_attn.o_proj.bias": "o_proj.bias",
    "mlp.down_proj.weight": "down.weight",
}
# Fused native parameter -> the HF parameters concatenated (row-wise, in this order) to build it.
_FUSED: dict[str, tuple[str, ...]] = {
    "qkv.weight": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "qkv.bias": ("self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"),
    "gate_up.weight": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
}
_FUSED_PART = {part: (fused, i) for fused, parts in _FUSED.items() for i, part in enumerate(parts)}


def _to_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    if hasattr(value, "to_tensor"):
        return value.to_tensor(dtype)
    raise TypeError(f"weight of type {type(value).__name__} is neither a tensor nor has .to_tensor(dtype)")


def convert_qwen3_state_dict(weights: Mapping[str, Any], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Native state dict from HF Qwen3 names. Raises ValueError on a name this model has no place for."""
    out: dict[str, torch.Tensor] = {}
    parts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    for raw_name, value in weights.items():
        name = raw_name.removeprefix("model.")
        if name.startswith("lm_head."):
            continue
        if name in ("embed_tokens.weight", "norm.weight"):
            out[name] = _to_tensor(value, dtype)
            continue
        m = _LAYER_NAME.match(name)
        if m is None:
            raise ValueError(f"unexpected Qwen3 weight {raw_name!r}")
        layer, suffix = int(m.group(1)), m.group(2)
        if suffix in _LAYER_RENAMES:
            out[f"layers.{layer}.{_LAYER_RENAMES[suffix]}"] = _to_tensor(value, dtype)
        elif suffix in _FUSED_PART:
            fused, index = _FUSED_PART[suffix]
            parts.setdefault((layer, fused), {})[index] = _to_tensor(value, dtype)
        else:
            raise ValueError(f"unexpected Qwen3 weight {raw_name!r}")
    for (layer, fused), found in parts.items():
        needed = _FUSED[fused]
        if len(found) != len(needed):
            absent = next(needed[i] for i in range(len(needed)) if i not in found)
            raise ValueError(f"Qwen3 layer {layer} lacks {absent}")
        out[f"layers.{layer}.{fused}"] = torch.cat([found[i] for i in range(len(needed))], dim=0)
    return out
