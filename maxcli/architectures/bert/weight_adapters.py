"""HF BertModel checkpoint names -> BertEmbeddingModel parameters.

Checkpoints name weights `bert.encoder.layer.0.attention.self.query.weight` (BertForX) or without the
`bert.` prefix (BertModel, e.g. all-MiniLM-L6-v2). The native model fuses query/key/value into one
projection, so those three are concatenated here (rows: q, then k, then v).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

# Weights an embedding model never uses: the pooler (CLS dense+tanh), MLM / NSP heads, and the
# position_ids buffer older checkpoints saved.
_IGNORED = re.compile(r"^(pooler\.|cls\.|embeddings\.position_ids$)")

# HF suffix inside `encoder.layer.N.` -> native suffix inside `layers.N.`.
_LAYER_RENAMES: dict[str, str] = {
    "attention.output.dense": "attn_out",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn_in",
    "output.dense": "ffn_out",
    "output.LayerNorm": "ffn_norm",
}
_EMBEDDING_RENAMES: dict[str, str] = {
    "embeddings.word_embeddings.weight": "word_embeddings.weight",
    "embeddings.position_embeddings.weight": "position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embeddings_norm.weight",
    "embeddings.LayerNorm.bias": "embeddings_norm.bias",
}
_LAYER_NAME = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_QKV = ("query", "key", "value")


def to_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    """A checkpoint entry as a tensor of `dtype`: torch tensors directly, readers through .to_tensor()."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype)
    if hasattr(value, "to_tensor"):
        return value.to_tensor(dtype)
    raise TypeError(f"weight of type {type(value).__name__} is neither a tensor nor has .to_tensor(dtype)")


def convert_safetensor_state_dict(
    state_dict: Mapping[str, Any],
    huggingface_config: Any = None,
    pipeline_config: Any = None,
    *,
    dtype: torch.dtype = torch.float32,
    **unused: Any,
) -> dict[str, torch.Tensor]:
    """BertEmbeddingModel state dict (load_state_dict-ready) from HF names; the configs are not needed.

    Raises ValueError on a name this model has no place for.
    """
    out: dict[str, torch.Tensor] = {}
    qkv_parts: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for raw_name, value in state_dict.items():
        name = raw_name.removeprefix("bert.")
        if _IGNORED.match(name):
            continue
        if name in _EMBEDDING_RENAMES:
            out[_EMBEDDING_RENAMES[name]] = to_tensor(value, dtype)
            continue
        m = _LAYER_NAME.match(name)
        if m is None:
            raise ValueError(f"unexpected BERT weight {raw_name!r}")
        layer, module, kind = int(m.group(1)), m.group(2), m.group(3)
        if module.startswith("attention.self."):
            proj = module.removeprefix("attention.self.")
            if proj not in _QKV:
                raise ValueError(f"unexpected BERT weight {raw_name!r}")
            qkv_parts.setdefault((layer, kind), {})[proj] = to_tensor(value, dtype)
        elif module in _LAYER_RENAMES:
            out[f"layers.{layer}.{_LAYER_RENAMES[module]}.{kind}"] = to_tensor(value, dtype)
        else:
            raise ValueError(f"unexpected BERT weight {raw_name!r}")
    for (layer, kind), parts in qkv_parts.items():
        missing = [p for p in _QKV if p not in parts]
        if missing:
            raise ValueError(f"layer {layer} lacks attention.self.{missing[0]}.{kind}")
        out[f"layers.{layer}.qkv.{kind}"] = torch.cat([parts[p] for p in _QKV], dim=0)
    return out
