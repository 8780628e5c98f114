"""Gemma 3 checkpoint names -> Gemma3ForCausalLM names.

Text-only checkpoints (gemma-3-1b, 270m) already use HF's `model.*` names. Multimodal checkpoints
(Gemma3ForConditionalGeneration) keep the decoder under `language_model.model.*` or
`model.language_model.*`; those prefixes are mapped and the vision tower / projector dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from maxcli.architectures.llama3.weight_adapters import NON_WEIGHT_SUFFIXES, gguf_state_dict
from maxcli.config.enums import RopeType

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["convert_gguf_state_dict", "convert_safetensor_state_dict"]

W = TypeVar("W")

_DECODER_PREFIXES = {
    "language_model.model.": "model.",
    "model.language_model.": "model.",
    "language_model.lm_head.": "lm_head.",
}
# GGUF block tensors Gemma 3 names its own way (four norms per layer).
_GGUF_LAYER_NAMES = {
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_NON_TEXT_PREFIXES = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def convert_safetensor_state_dict(state: Mapping[str, W], hf_config: PretrainedConfig | Mapping[str, Any]) -> dict[str, W]:
    out: dict[str, W] = {}
    for name, w in state.items():
        if name.startswith(_NON_TEXT_PREFIXES) or name.endswith(NON_WEIGHT_SUFFIXES):
            continue
        for old, new in _DECODER_PREFIXES.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        out[name] = w
    return out


def convert_gguf_state_dict(state: Mapping[str, Any], hf_config: Any, pipeline_config: Any = None) -> dict[str, Any]:
    """Gemma files store RMSNorm weights as (1 + w); HF's Gemma3RMSNorm adds the 1 itself: -1 here."""
    return gguf_state_dict(state, hf_config, pipeline_config, RopeType.neox, layer_names=_GGUF_LAYER_NAMES,
                           norm_shift=-1.0)


def _gemma3_gguf_config(gguf: Any, config: dict[str, Any]) -> None:
    # llama.cpp scales queries by 1/sqrt(hidden/heads) for the 62-layer (27B) model, else 1/sqrt(head_dim)
    big = config["num_hidden_layers"] == 62
    config["query_pre_attn_scalar"] = config["hidden_size"] // config["num_attention_heads"] if big else config["head_dim"]
    config["rope_local_base_freq"] = float(gguf.get("gemma3.rope.freq_base_swa", 10_000.0))
    pattern = gguf.get("gemma3.attention.sliding_window_pattern")
    config["sliding_window_pattern"] = int(pattern) if isinstance(pattern, int) else 6
    config["qk_norm"] = True  # per-head RMSNorm on q and k (attn_q_norm / attn_k_norm tensors)


def gguf_architectures() -> list[Any]:
    from maxcli.weights.gguf_config import GGUFArchitecture

    return [GGUFArchitecture("gemma3", "gemma3_text", "Gemma3ForCausalLM", rope_theta=1_000_000.0, rms_norm_eps=1e-6,
                             fix=_gemma3_gguf_config)]
