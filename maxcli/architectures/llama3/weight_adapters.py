"""Checkpoint -> model parameter names for Llama-family models (the model's names are HF's).

safetensors: HF names already match; precomputed rope buffers are dropped. GGUF: renamed (and Q/K rows
un-permuted, Gemma norms shifted) by maxcli.weights.gguf_names. Values stay lazy WeightData.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from maxcli.pipelines.lib.hf_config import PretrainedConfig  # isinstance without importing transformers

W = TypeVar("W")

# Checkpoint entries that are buffers, not weights.
NON_WEIGHT_SUFFIXES = ("rotary_emb.inv_freq",)


def config_dict(hf_config: PretrainedConfig | Mapping[str, Any]) -> dict[str, Any]:
    return hf_config.to_dict() if isinstance(hf_config, PretrainedConfig) else dict(hf_config)


def convert_safetensor_state_dict(state: Mapping[str, W], hf_config: PretrainedConfig | Mapping[str, Any]) -> dict[str, W]:
    return {name: w for name, w in state.items() if not name.endswith(NON_WEIGHT_SUFFIXES)}


def convert_gguf_state_dict(state: Mapping[str, Any], hf_config: PretrainedConfig | Mapping[str, Any]) -> dict[str, Any]:
    from maxcli.weights.gguf_names import gguf_to_hf_names

    return gguf_to_hf_names(state, config_dict(hf_config))
