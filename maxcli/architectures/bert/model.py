"""BertModel in plain torch + maxcli.ops: the encoder behind sentence embedding models (MiniLM, BGE, ...).

Post-norm encoder with absolute position embeddings and token types. Attention is bidirectional over a
right-padded batch (positions count from 0 in every row): a key-padding mask keeps each row's
vector independent of what it is batched with. Query/key/value are one fused projection (one matmul
per layer instead of three).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from maxcli.architectures.bert.weight_adapters import convert_safetensor_state_dict
from maxcli.nn.weight_loading import assign_state_dict
from maxcli.ops import layer_norm

if TYPE_CHECKING:
    from transformers import BertConfig

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # erf form, as BERT's "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class _LayerNorm(nn.Module):
    def __init__(self, size: int, eps: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(size, dtype=dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(size, dtype=dtype), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, self.eps)


class _BertLayer(nn.Module):
    def __init__(self, config: BertConfig, dtype: torch.dtype) -> None:
        super().__init__()
        h, ff, eps = config.hidden_size, config.intermediate_size, config.layer_norm_eps
        self.num_heads = config.num_attention_heads
        self.head_dim = h // self.num_heads
        self.qkv = nn.Linear(h, 3 * h, dtype=dtype)
        self.attn_out = nn.Linear(h, h, dtype=dtype)
        self.attn_norm = _LayerNorm(h, eps, dtype)
        self.ffn_in = nn.Linear(h, ff, dtype=dtype)
        self.ffn_out = nn.Linear(ff, h, dtype=dtype)
        self.ffn_norm = _LayerNorm(h, eps, dtype)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, H]; key_mask [B, 1, 1, L] bool, True where the key is a real token."""
        b, length, h = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)  # [B, nh, L, hd]
        o = o.transpose(1, 2).reshape(b, length, h)
        x = self.attn_norm(self.attn_out(o) + x)
        return self.ffn_norm(self.ffn_out(self.act(self.ffn_in(x))) + x)


class BertEmbeddingModel(nn.Module):
    """forward(input_ids [B, L], attention_mask [B, L], token_type_ids=None) -> last_hidden_state [B, L, H].

    Parameters are created on the meta device and materialized by load_weights (no random init cost).
    """

    causal = False

    def __init__(self, config: BertConfig, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"BERT position_embedding_type {config.position_embedding_type!r} is not supported")
        if config.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"BERT hidden_act {config.hidden_act!r} is not supported")
        if config.hidden_size % config.num_attention_heads:
            raise ValueError("BERT hidden_size must be a multiple of num_attention_heads")
        self.config = config
        self.dtype = dtype
        self.max_positions = config.max_position_embeddings
        with torch.device("meta"):
            h = config.hidden_size
            self.word_embeddings = nn.Embedding(config.vocab_size, h, dtype=dtype)
            self.position_embeddings = nn.Embedding(config.max_position_embeddings, h, dtype=dtype)
            self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h, dtype=dtype)
            self.embeddings_norm = _LayerNorm(h, config.layer_norm_eps, dtype)
            self.layers = nn.ModuleList(_BertLayer(config, dtype) for _ in range(config.num_hidden_layers))
        self.requires_grad_(False)

    def load_weights(self, weights: Mapping[str, Any]) -> None:
        """Load HF BertModel weights (names with or without "bert."); pooler and MLM/NSP heads are ignored.

        Values are tensors or objects with .to_tensor(dtype). Raises ValueError on missing or unknown names.
        """
        state = convert_safetensor_state_dict(weights, dtype=self.dtype)
        assign_state_dict(self, state, "BERT")

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.word_embeddings.weight.is_meta:
            raise RuntimeError("BertEmbeddingModel has no weights yet: call load_weights first")
        _, length = input_ids.shape
        if length > self.max_positions:
            raise ValueError(f"sequence length {length} exceeds BERT max_position_embeddings {self.max_positions}")
        key_mask = attention_mask.to(torch.bool)
        if not bool(key_mask.any(dim=1).all()):
            raise ValueError("every row of attention_mask needs at least one real token")
        positions = torch.arange(length, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings(token_type_ids)
        )
        x = self.embeddings_norm(x)
        key_mask = key_mask[:, None, None, :]
        for layer in self.layers:
            x = layer(x, key_mask)
        return x
