"""Llama 2/3 (and SmolLM2) on maxcli.nn; the base the Mistral, Qwen 2/3 and Phi-3 models subclass.

forward(input_ids [T], positions [T]) runs the packed tokens of every sequence in the step; attention
reads the step's metadata (maxcli.nn.attention_metadata). Per layer: one fused QKV GEMM, one rope op,
one paged-attention op, one o_proj GEMM, one fused gate/up GEMM, one activation op, one down GEMM and
two norm ops with the residual add fused in.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from maxcli import ops
from maxcli.architectures.rope import RotaryEmbedding, rotary_embedding_for
from maxcli.nn import (
    LLAMA_STACKED_PARAMS,
    Embedding,
    MergedColumnLinear,
    PagedAttention,
    ParallelLMHead,
    QKVLinear,
    RMSNorm,
    RowParallelLinear,
    TensorSource,
    load_weights,
)

if TYPE_CHECKING:
    from transformers import PretrainedConfig

ActAndMul = Callable[[torch.Tensor], torch.Tensor]  # x [..., 2F] -> act(x[..., :F]) * x[..., F:]

ACTIVATIONS: dict[str, ActAndMul] = {
    "silu": ops.silu_and_mul,
    "swish": ops.silu_and_mul,
    "gelu_pytorch_tanh": ops.gelu_tanh_and_mul,
    "gelu_tanh": ops.gelu_tanh_and_mul,
}


def head_dim_of(config: PretrainedConfig) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def num_kv_heads_of(config: PretrainedConfig) -> int:
    return getattr(config, "num_key_value_heads", None) or config.num_attention_heads


def kv_cache_shape(config: PretrainedConfig) -> tuple[int, int, int]:
    """(num_layers, num_kv_heads, head_dim): each layer's cache is [num_blocks, page_size, Hk, D]."""
    return config.num_hidden_layers, num_kv_heads_of(config), head_dim_of(config)


def max_seq_len(config: PretrainedConfig) -> int:
    """Longest context the rope tables cover."""
    return int(config.max_position_embeddings)


def layer_sliding_window(config: PretrainedConfig, layer_idx: int) -> int | None:
    """Window of layer `layer_idx`: per `layer_types` when the config has them, else the global one."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and layer_types[layer_idx] != "sliding_attention":
        return None
    return window or None


def activation_of(name: str) -> ActAndMul:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class LlamaMLP(nn.Module):
    decode_layout = "gated"  # down(act(gate) * up) over one fused gate/up projection (maxcli.nn.fused_decode)

    def __init__(self, config: PretrainedConfig, dtype: torch.dtype) -> None:
        super().__init__()
        bias = bool(getattr(config, "mlp_bias", False))
        inter = config.intermediate_size
        self.gate_up_proj = MergedColumnLinear(config.hidden_size, [inter, inter], bias=bias, dtype=dtype)
        self.down_proj = RowParallelLinear(inter, config.hidden_size, bias=bias, dtype=dtype)
        act = getattr(config, "hidden_activation", None) or config.hidden_act
        self.act_and_mul = activation_of(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_and_mul(self.gate_up_proj(x)))


class LlamaAttention(nn.Module):
    """Subclasses change `qkv_bias`/`o_bias`, add q_norm/k_norm, or override `scale_of`.

    Under tensor parallelism num_heads / num_kv_heads are this rank's heads (see QKVLinear)."""

    decode_layout = "gqa"  # fused qkv, optional per-head q/k norms, rope, paged attention, o_proj
    qkv_bias: bool | None = None  # None: config.attention_bias
    o_bias: bool | None = None

    def __init__(self, config: PretrainedConfig, layer_idx: int, dtype: torch.dtype) -> None:
        super().__init__()
        total_heads, self.head_dim = config.num_attention_heads, head_dim_of(config)
        attention_bias = bool(getattr(config, "attention_bias", False))
        qkv_bias = attention_bias if self.qkv_bias is None else self.qkv_bias
        o_bias = attention_bias if self.o_bias is None else self.o_bias
        self.qkv_proj = QKVLinear(
            config.hidden_size, self.head_dim, total_heads, num_kv_heads_of(config), bias=qkv_bias, dtype=dtype
        )
        self.num_heads, self.num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        heads_in = (self.qkv_proj.q_start * self.head_dim, self.num_heads * self.head_dim)  # this rank's heads
        self.o_proj = RowParallelLinear(
            total_heads * self.head_dim, config.hidden_size, bias=o_bias, dtype=dtype, input_range=heads_in
        )
        self.q_norm: RMSNorm | None = None  # per-head norms applied before rope (Qwen 3, Gemma 3)
        self.k_norm: RMSNorm | None = None
        self.attn = PagedAttention(
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
            self.scale_of(config),
            sliding_window=layer_sliding_window(config, layer_idx),
            softcap=getattr(config, "attn_logit_softcapping", None),
        )

    def scale_of(self, config: PretrainedConfig) -> float:
        return 1.0 / math.sqrt(head_dim_of(config))

    def forward(self, rope: RotaryEmbedding, rope_positions: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        q, k, v = self.qkv_proj.forward_split(x)
        q = q.view(T, self.num_heads, self.head_dim)
        k = k.view(T, self.num_kv_heads, self.head_dim)
        v = v.view(T, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = rope(rope_positions, q, k)
        return self.o_proj(self.attn(q, k, v))


class LlamaDecoderLayer(nn.Module):
    decode_layout = "pre_norm"  # h += attn(norm(h)); h += mlp(norm(h))
    attention_cls: type[LlamaAttention] = LlamaAttention

    def __init__(self, config: PretrainedConfig, layer_idx: int, dtype: torch.dtype) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.self_attn = self.attention_cls(config, layer_idx, dtype)
        self.mlp = LlamaMLP(config, dtype)
        self.input_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, dtype=dtype)

    def forward(
        self, rope: RotaryEmbedding, rope_positions: torch.Tensor, h: torch.Tensor, residual: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (layer output, residual stream before it); the caller's next norm adds them."""
        if residual is None:
            residual, h = h, self.input_layernorm(h)
        else:
            h, residual = self.input_layernorm(h, residual)
        h = self.self_attn(rope, rope_positions, h)
        h, residual = self.post_attention_layernorm(h, residual)
        return self.mlp(h), residual


SHARED_ROPE = "shared"


def rope_key(config: PretrainedConfig, layer_idx: int) -> str:
    """Which rope table layer `layer_idx` uses: its layer type when the config nests rope parameters by
    layer type (Gemma 3: local vs global base), else SHARED_ROPE (one table for every layer)."""
    params = getattr(config, "rope_parameters", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and isinstance(params, Mapping) and layer_types[layer_idx] in params:
        return layer_types[layer_idx]
    return SHARED_ROPE


class LlamaModel(nn.Module):
    decode_layout = "decoder"  # embed -> layers -> final norm
    decoder_layer_cls: type[nn.Module] = LlamaDecoderLayer
    norm_offset = 0.0  # 1.0 for Gemma's (1 + w) norms

    def __init__(self, config: PretrainedConfig, dtype: torch.dtype) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size, dtype=dtype)
        self.layers = nn.ModuleList(
            self.decoder_layer_cls(config, i, dtype) for i in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, weight_offset=self.norm_offset, dtype=dtype)
        self.layer_rope_keys = [rope_key(config, i) for i in range(config.num_hidden_layers)]
        self.rotary_embs = nn.ModuleDict(
            {
                key: rotary_embedding_for(config, head_dim_of(config), layer_type=None if key == SHARED_ROPE else key)
                for key in dict.fromkeys(self.layer_rope_keys)
            }
        )

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        # Table rows are resolved once per step, not per layer.
        ropes = {key: (rope, rope.table_positions(positions)) for key, rope in self.rotary_embs.items()}
        h, residual = self.embed(input_ids), None
        for layer, key in zip(self.layers, self.layer_rope_keys):
            rope, rope_positions = ropes[key]
            h, residual = layer(rope, rope_positions, h, residual)
        return self.norm(h, residual)[0]


class LlamaForCausalLM(nn.Module):
    """HF-named parameters (model.layers.N.self_attn.qkv_proj.weight, ...); q/k/v and gate/up load fused."""

    model_cls: type[LlamaModel] = LlamaModel
    stacked_params = LLAMA_STACKED_PARAMS
    # Checkpoint entries that are not weights of this model (precomputed rope buffers).
    ignored_weights: tuple[str, ...] = ("rotary_emb.inv_freq",)
    # Also reachable from the class, for runners that only hold `module_class`.
    kv_cache_shape = staticmethod(kv_cache_shape)
    max_seq_len = staticmethod(max_seq_len)

    def __init__(self, config: PretrainedConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.config, self.dtype = config, dtype
        self.model = self.model_cls(config, dtype)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        self.lm_head = (
            None if self.tie_word_embeddings else ParallelLMHead(config.vocab_size, config.hidden_size, dtype=dtype)
        )

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Packed hidden states [T, hidden] after the final norm."""
        return self.model(input_ids, positions)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, hidden] -> logits [N, vocab] float32."""
        head = self.model.embed_tokens if self.lm_head is None else self.lm_head
        return head.logits(hidden)

    def load_weights(self, weights: Mapping[str, torch.Tensor | TensorSource]) -> None:
        """HF-named tensors or lazy WeightData; tied models ignore a stored lm_head copy."""
        ignored = self.ignored_weights + (("lm_head.weight",) if self.tie_word_embeddings else ())
        load_weights(self, weights, self.stacked_params, ignored)
