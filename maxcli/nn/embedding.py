"""Token embedding. Vocab-parallel ready: a rank would hold rows [start, end) of `weight` (dim 0), look up
only its own ids and all-reduce; the tied LM head then computes the matching logit columns."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maxcli.nn.linear import default_weight_loader


class Embedding(nn.Module):
    """weight [num_embeddings, embedding_dim]; forward(ids [T]) -> [T, embedding_dim]."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, dtype=dtype), requires_grad=False)
        self.weight.weight_loader = default_weight_loader
        self.weight.shard_ids = ()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
