"""Checkpoint names are HF's, as for Llama (see maxcli.architectures.llama3.weight_adapters). GGUF files
store gate and up fused as `ffn_up` (HF's mlp.gate_up_proj) and keep Q/K rows in order."""

from typing import Any

from maxcli.architectures.llama3.weight_adapters import convert_safetensor_state_dict, gguf_state_dict
from maxcli.config.enums import RopeType

__all__ = ["convert_gguf_state_dict", "convert_safetensor_state_dict"]


def convert_gguf_state_dict(state: Any, hf_config: Any, pipeline_config: Any = None) -> dict[str, Any]:
    return gguf_state_dict(state, hf_config, pipeline_config, RopeType.longrope, layer_names={"ffn_up": "mlp.gate_up_proj"})


def _phi3_gguf_config(gguf: Any, config: dict[str, Any]) -> None:
    config.setdefault("original_max_position_embeddings", config.get("max_position_embeddings"))
    rope_dim = gguf.get("phi3.rope.dimension_count")
    if rope_dim and config["head_dim"]:
        config["partial_rotary_factor"] = rope_dim / config["head_dim"]


def gguf_architectures() -> list[Any]:
    from maxcli.weights.gguf_config import GGUFArchitecture

    return [GGUFArchitecture("phi3", "phi3", "Phi3ForCausalLM", fix=_phi3_gguf_config)]
