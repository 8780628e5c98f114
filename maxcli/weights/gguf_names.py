"""GGUF tensor names -> HF transformers names: the generic machinery an architecture's GGUF weight
adapter drives (each architecture folder says which fixes its family needs; nothing here names one).

With the right knobs the result equals (tensor for tensor) the state dict transformers builds with
`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`:
- `interleaved_rope`: the file stores Q and K rows permuted (llama.cpp's "normal" rope interleaves each
  head's rotary halves); the inverse permutation is applied lazily to the rows (raw blocks included).
- `norm_shift`: added to every norm weight (Gemma files store (1 + w); HF adds the 1 itself: -1).
- `layer_names`: the family's own block-tensor names over the common table.
- a file without `output.weight` has tied embeddings: `lm_head.weight` is the embedding.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from maxcli.weights.weight_data import WeightData, WeightsError

_GLOBAL = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}

_LAYER = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# Tensors that carry rope parameters, not model weights (read into the config instead).
_NOT_WEIGHTS = {"rope_freqs", "rope_factors_long", "rope_factors_short"}

_LAYER_NAME = re.compile(r"^blk\.(\d+)\.([a-z_0-9]+)\.(weight|bias)$")
_GLOBAL_NAME = re.compile(r"^([a-z_0-9]+)\.(weight|bias)$")


def unpermute_rows(num_rows: int, num_heads: int) -> torch.Tensor:
    """Row order that undoes llama.cpp's Q/K permutation: HF row i is GGUF row perm[i].

    llama.cpp stores each head's rows as [pairs interleaved]; HF keeps [first halves | second halves].
    """
    if num_rows % (2 * num_heads):
        raise WeightsError(f"{num_rows} rows cannot be split into {num_heads} heads of rotary pairs")
    half = num_rows // num_heads // 2
    return torch.arange(num_rows).view(num_heads, half, 2).transpose(1, 2).reshape(-1)


def hf_name(gguf_name: str, layer_names: Mapping[str, str] | None = None) -> str | None:
    """The HF name of a GGUF tensor name (block tensors through the common table updated with
    `layer_names`), or None for tensors that are not model weights."""
    m = _LAYER_NAME.match(gguf_name)
    if m:
        layer, part, kind = m.groups()
        table = {**_LAYER, **(layer_names or {})}
        if part not in table:
            raise WeightsError(f"GGUF tensor {gguf_name!r} has no HF equivalent in this architecture")
        return f"model.layers.{layer}.{table[part]}.{kind}"
    m = _GLOBAL_NAME.match(gguf_name)
    if m and m.group(1) in _NOT_WEIGHTS:
        return None
    if m and m.group(1) in _GLOBAL:
        return f"{_GLOBAL[m.group(1)]}.{m.group(2)}"
    raise WeightsError(f"GGUF tensor {gguf_name!r} has no HF equivalent in this architecture")


def gguf_to_hf_names(
    weights: Mapping[str, WeightData],
    hf_config: Mapping[str, Any],
    *,
    interleaved_rope: bool = False,
    layer_names: Mapping[str, str] | None = None,
    norm_shift: float = 0.0,
) -> dict[str, WeightData]:
    """Rename (and lazily fix up) GGUF tensors to HF names; `hf_config` as from GGUFFile.hf_config()."""
    n_heads = int(hf_config["num_attention_heads"])
    n_kv_heads = int(hf_config.get("num_key_value_heads") or n_heads)
    out: dict[str, WeightData] = {}
    for name, weight in weights.items():
        target = hf_name(name, layer_names)
        if target is None:
            continue
        w = weight.renamed(target)
        if interleaved_rope and target.endswith(("q_proj.weight", "q_proj.bias")):
            w = w.permute_rows(unpermute_rows(w.shape[0], n_heads))
        elif interleaved_rope and target.endswith(("k_proj.weight", "k_proj.bias")):
            w = w.permute_rows(unpermute_rows(w.shape[0], n_kv_heads))
        if norm_shift and target.endswith("norm.weight"):
            w = w.plus(norm_shift)
        out[target] = w
    if "lm_head.weight" not in out and "model.embed_tokens.weight" in out:
        out["lm_head.weight"] = out["model.embed_tokens.weight"].renamed("lm_head.weight")
    return out
