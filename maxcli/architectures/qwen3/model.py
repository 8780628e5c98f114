"""Qwen 3 (dense): Llama plus an RMSNorm over each q and k head before rope."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from maxcli.architectures.llama3.model import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    kv_cache_shape,
    max_seq_len,
)
from maxcli.nn import RMSNorm

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["Qwen3ForCausalLM", "kv_cache_shape", "max_seq_len"]


class Qwen3Attention(LlamaAttention):
    def __init__(self, config: PretrainedConfig, layer_idx: int, dtype: torch.dtype) -> None:
        super().__init__(config, layer_idx, dtype)
        self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype=dtype)
        self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps, dtype=dtype)


class Qwen3DecoderLayer(LlamaDecoderLayer):
    attention_cls = Qwen3Attention


class Qwen3Model(LlamaModel):
    decoder_layer_cls = Qwen3DecoderLayer


class Qwen3ForCausalLM(LlamaForCausalLM):
    model_cls = Qwen3Model
