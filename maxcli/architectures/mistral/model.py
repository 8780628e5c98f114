"""Mistral: Llama with a sliding attention window (config.sliding_window, applied to every layer by
`layer_sliding_window`) and an explicit head_dim; nothing else differs."""

from __future__ import annotations

from maxcli.architectures.llama3.model import LlamaForCausalLM, kv_cache_shape, max_seq_len

__all__ = ["MistralForCausalLM", "kv_cache_shape", "max_seq_len"]


class MistralForCausalLM(LlamaForCausalLM):
    pass
