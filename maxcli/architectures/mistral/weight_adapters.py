"""Checkpoint names are HF's, as for Llama (see maxcli.architectures.llama3.weight_adapters). Mistral GGUF
files say "llama": a file is Mistral's when its name says so or it has a sliding window."""

from typing import Any

from maxcli.architectures.llama3.weight_adapters import convert_gguf_state_dict, convert_safetensor_state_dict, llama_gguf_config

__all__ = ["convert_gguf_state_dict", "convert_safetensor_state_dict", "gguf_architectures"]


def _is_mistral(gguf: Any) -> bool:
    name = str(gguf.get("general.name", "") or "").lower()
    return "mistral" in name or gguf.get("llama.attention.sliding_window") is not None


def gguf_architectures() -> list[Any]:
    from maxcli.weights.gguf_config import GGUFArchitecture

    return [GGUFArchitecture("llama", "mistral", "MistralForCausalLM", head_dim_from_rope=True, claims=_is_mistral,
                             fix=llama_gguf_config)]
