"""Gemma 3 text decoder (Gemma3ForCausalLM / Gemma3TextConfig).

Differs from Llama in: (1 + w) RMSNorms everywhere, q/k norms, sandwich norms around attention and MLP
(post_attention, pre_/post_feedforward), embeddings scaled by sqrt(hidden) rounded to the model dtype,
gelu-tanh MLP, attention scale query_pre_attn_scalar^-0.5, sliding vs full layers by `layer_types` with
a rope table (base and scaling) per layer type, optional attention-logit and final-logit soft-capping.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from maxcli.architectures.llama3.model import (
    LlamaAttention,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    kv_cache_shape,
    max_seq_len,
)
from maxcli.architectures.rope import RotaryEmbedding
from maxcli.nn import RMSNorm

if TYPE_CHECKING:
    from transformers import PretrainedConfig

__all__ = ["Gemma3ForCausalLM", "kv_cache_shape", "max_seq_len"]

GEMMA_NORM_OFFSET = 1.0


class Gemma3Attention(LlamaAttention):
    def __init__(self, config: PretrainedConfig, layer_idx: int, dtype: torch.dtype) -> None:
        super().__init__(config, layer_idx, dtype)
        eps = config.rms_norm_eps
        self.q_norm = RMSNorm(self.head_dim, eps, weight_offset=GEMMA_NORM_OFFSET, dtype=dtype)
        self.k_norm = RMSNorm(self.head_dim, eps, weight_offset=GEMMA_NORM_OFFSET, dtype=dtype)

    def scale_of(self, config: PretrainedConfig) -> float:
        return 1.0 / math.sqrt(config.query_pre_attn_scalar)


class Gemma3DecoderLayer(nn.Module):
    decode_layout = "sandwich"  # h += post_norm(attn(norm(h))); h += post_norm(mlp(pre_norm(h)))

    def __init__(self, config: PretrainedConfig, layer_idx: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.self_attn = Gemma3Attention(config, layer_idx, dtype)
        self.mlp = LlamaMLP(config, dtype)

        def norm() -> RMSNorm:
            return RMSNorm(config.hidden_size, config.rms_norm_eps, weight_offset=GEMMA_NORM_OFFSET, dtype=dtype)

        self.input_layernorm = norm()
        self.post_attention_layernorm = norm()
        self.pre_feedforward_layernorm = norm()
        self.post_feedforward_layernorm = norm()

    def forward(
        self, rope: RotaryEmbedding, rope_positions: torch.Tensor, h: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Same (output, residual) convention as LlamaDecoderLayer: the stream is output + residual."""
        if residual is None:
            residual, h = h, self.input_layernorm(h)
        else:
            h, residual = self.input_layernorm(h, residual)
        h = self.post_attention_layernorm(self.self_attn(rope, rope_positions, h))
        h, residual = self.pre_feedforward_layernorm(h, residual)
        return self.post_feedforward_layernorm(self.mlp(h)), residual


class Gemma3Model(LlamaModel):
    decoder_layer_cls = Gemma3DecoderLayer  # type: ignore[assignment]
    norm_offset = GEMMA_NORM_OFFSET

    def __init__(self, config: PretrainedConfig, dtype: torch.dtype) -> None:
        super().__init__(config, dtype)
        # sqrt(hidden) rounded to the model dtype first, as HF's Gemma3TextScaledWordEmbedding does.
        self.embed_scale = float(torch.tensor(math.sqrt(config.hidden_size), dtype=dtype))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids) * self.embed_scale


class Gemma3ForCausalLM(LlamaForCausalLM):
    model_cls = Gemma3Model

    def __init__(self, config: PretrainedConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__(config, dtype)
        self.final_logit_softcapping: float | None = getattr(config, "final_logit_softcapping", None)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = super().compute_logits(hidden)
        if self.final_logit_softcapping:
            cap = self.final_logit_softcapping
            logits = torch.tanh(logits / cap) * cap
        return logits
