"""Qwen 2 / 2.5: Llama with biases on q, k and v (not on o_proj)."""

from __future__ import annotations

from maxcli.architectures.llama3.model import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    kv_cache_shape,
    max_seq_len,
)

__all__ = ["Qwen2ForCausalLM", "kv_cache_shape", "max_seq_len"]


class Qwen2Attention(LlamaAttention):
    qkv_bias = True
    o_bias = False


class Qwen2DecoderLayer(LlamaDecoderLayer):
    attention_cls = Qwen2Attention


class Qwen2Model(LlamaModel):
    decoder_layer_cls = Qwen2DecoderLayer


class Qwen2ForCausalLM(LlamaForCausalLM):
    model_cls = Qwen2Model
