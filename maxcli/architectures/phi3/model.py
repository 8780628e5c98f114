"""Phi-3 / Phi-3.5 / Phi-4-mini: Llama with q/k/v and gate/up stored fused in the checkpoint (they load
whole into qkv_proj / gate_up_proj), longrope ("su") scaling and optional partial rotary, all of which
the shared layers and rope tables already handle."""

from __future__ import annotations

from maxcli.architectures.llama3.model import LlamaForCausalLM, kv_cache_shape, max_seq_len

__all__ = ["Phi3ForCausalLM", "kv_cache_shape", "max_seq_len"]


class Phi3ForCausalLM(LlamaForCausalLM):
    stacked_params = ()  # checkpoint names already match the fused parameters
