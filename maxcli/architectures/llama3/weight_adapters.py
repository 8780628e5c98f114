"""Checkpoint -> model parameter names for Llama-family models (the model's names are HF's).

safetensors: HF names already match; precomputed rope buffers are dropped. GGUF: renamed by
maxcli.weights.gguf_names with this family's fixes; families that resemble Llama call `gguf_state_dict`
with theirs. Values stay lazy WeightData.

Q/K rows of a GGUF file are un-permuted when the rope type is "normal" (llama.cpp interleaves the rotary
pairs of those files): the architecture's rope type, or the config's `rope_type` when forced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from maxcli.config.enums import RopeType
from maxcli.pipelines.lib.hf_config import PretrainedConfig  # isinstance without importing transformers

W = TypeVar("W")

# Checkpoint entries that are buffers, not weights.
NON_WEIGHT_SUFFIXES = ("rotary_emb.inv_freq",)


def config_dict(hf_config: PretrainedConfig | Mapping[str, Any]) -> dict[str, Any]:
    return hf_config.to_dict() if isinstance(hf_config, PretrainedConfig) else dict(hf_config)


def convert_safetensor_state_dict(state: Mapping[str, W], hf_config: PretrainedConfig | Mapping[str, Any]) -> dict[str, W]:
    return {name: w for name, w in state.items() if not name.endswith(NON_WEIGHT_SUFFIXES)}


def gguf_state_dict(
    state: Mapping[str, Any],
    hf_config: PretrainedConfig | Mapping[str, Any],
    pipeline_config: Any,
    default_rope_type: RopeType,
    layer_names: Mapping[str, str] | None = None,
    norm_shift: float = 0.0,
) -> dict[str, Any]:
    """HF-named weights of a GGUF file for a Llama-like family (its rope type, block names, norm shift)."""
    from maxcli.weights.gguf_names import gguf_to_hf_names

    rope_type = getattr(pipeline_config, "rope_type", None) or default_rope_type
    return gguf_to_hf_names(state, config_dict(hf_config), interleaved_rope=RopeType(rope_type) is RopeType.normal,
                            layer_names=layer_names, norm_shift=norm_shift)


def convert_gguf_state_dict(
    state: Mapping[str, Any], hf_config: PretrainedConfig | Mapping[str, Any], pipeline_config: Any = None
) -> dict[str, Any]:
    return gguf_state_dict(state, hf_config, pipeline_config, RopeType.normal)


def llama_gguf_config(gguf: Any, config: dict[str, Any]) -> None:
    """Llama-3 files keep their rope scaling as per-frequency divisors (`rope_freqs.weight`)."""
    from maxcli.weights.gguf_config import llama3_rope_scaling

    if "rope_freqs.weight" in gguf.tensors:
        config["rope_scaling"] = llama3_rope_scaling(gguf.tensors["rope_freqs.weight"].to_tensor().tolist(), config)


def gguf_architectures() -> list[Any]:
    from maxcli.weights.gguf_config import GGUFArchitecture

    return [GGUFArchitecture("llama", "llama", "LlamaForCausalLM", head_dim_from_rope=True, fix=llama_gguf_config)]
