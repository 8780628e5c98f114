"""Checkpoint names are HF's, as for Llama (see maxcli.architectures.llama3.weight_adapters)."""

from maxcli.architectures.llama3.weight_adapters import convert_gguf_state_dict, convert_safetensor_state_dict

__all__ = ["convert_gguf_state_dict", "convert_safetensor_state_dict"]
