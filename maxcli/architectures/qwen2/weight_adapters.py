"""Checkpoint names are HF's, as for Llama (see maxcli.architectures.llama3.weight_adapters); GGUF files
of this family keep Q/K rows in order (neox rope)."""

from typing import Any

from maxcli.architectures.llama3.weight_adapters import convert_safetensor_state_dict, gguf_state_dict
from maxcli.config.enums import RopeType

__all__ = ["convert_gguf_state_dict", "convert_safetensor_state_dict"]


def convert_gguf_state_dict(state: Any, hf_config: Any, pipeline_config: Any = None) -> dict[str, Any]:
    return gguf_state_dict(state, hf_config, pipeline_config, RopeType.neox)


def gguf_architectures() -> list[Any]:
    from maxcli.weights.gguf_config import GGUFArchitecture

    return [GGUFArchitecture("qwen2", "qwen2", "Qwen2ForCausalLM", rope_theta=1_000_000.0, rms_norm_eps=1e-6)]
