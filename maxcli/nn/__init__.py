"""Layers for native models (mirrors `max.nn`). They call `maxcli.ops` for the hot ops, never kernels."""

from maxcli.nn.attention import PagedAttention, bind_kv_caches, paged_attention_layers
from maxcli.nn.embedding import Embedding, ParallelLMHead
from maxcli.nn.linear import ColumnParallelLinear, Linear, MergedColumnLinear, QKVLinear, RowParallelLinear
from maxcli.nn.module import LayerList, Module
from maxcli.nn.norm import LayerNorm, RMSNorm
from maxcli.nn.weight_loading import LLAMA_STACKED_PARAMS, StackedParam, TensorSource, load_weights

__all__ = [
    "LLAMA_STACKED_PARAMS",
    "ColumnParallelLinear",
    "Embedding",
    "LayerList",
    "LayerNorm",
    "Linear",
    "Module",
    "MergedColumnLinear",
    "PagedAttention",
    "ParallelLMHead",
    "QKVLinear",
    "RMSNorm",
    "RowParallelLinear",
    "StackedParam",
    "TensorSource",
    "bind_kv_caches",
    "load_weights",
    "paged_attention_layers",
]
