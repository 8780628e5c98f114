"""Token embedding and LM-head weights, vocab-parallel by construction.

Rank r of a tensor-parallel group holds rows [r*n, (r+1)*n) of the [vocab, hidden] table, n =
ceil(vocab / tp); rows past the vocabulary (last rank) stay zero. A lookup reads only the rank's own ids
and all-reduces; logits computed against a rank's rows are gathered across ranks and cut to the vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maxcli.distributed.parallel_state import TensorParallelGroup, current_group
from maxcli.nn.linear import default_weight_loader


class Embedding(nn.Module):
    """weight [rows of this rank, embedding_dim]; forward(ids [T]) -> [T, embedding_dim]."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.tp: TensorParallelGroup = current_group()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        rows = -(-num_embeddings // self.tp.size)
        self.vocab_start = self.tp.rank * rows
        self.vocab_end = min(num_embeddings, self.vocab_start + rows)
        self.weight = nn.Parameter(torch.empty(rows, embedding_dim, dtype=dtype), requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        self.weight.shard_ids = ()
        self.weight.checkpoint_shape = (num_embeddings, embedding_dim)

    def weight_loader(self, param: nn.Parameter, loaded: torch.Tensor, shard_id: object = None) -> None:
        if not self.tp.is_parallel:
            default_weight_loader(param, loaded)
            return
        n = self.vocab_end - self.vocab_start
        with torch.no_grad():
            param.zero_()
            param[:n].copy_(loaded[self.vocab_start : self.vocab_end])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self.tp.is_parallel:
            return F.embedding(input_ids, self.weight)
        mine = (input_ids >= self.vocab_start) & (input_ids < self.vocab_end)
        local = torch.where(mine, input_ids - self.vocab_start, 0)
        out = F.embedding(local, self.weight) * mine.unsqueeze(-1).to(self.weight.dtype)
        return self.tp.all_reduce(out)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, embedding_dim] -> float32 logits [N, num_embeddings] against this table (an LM head)."""
        return self.gather_logits(F.linear(hidden, self.weight)).float()

    def gather_logits(self, local_logits: torch.Tensor) -> torch.Tensor:
        """Logits against this rank's rows [N, rows] -> the full vocabulary [N, num_embeddings]."""
        if not self.tp.is_parallel:
            return local_logits
        return self.tp.all_gather_last(local_logits)[..., : self.num_embeddings]

    def extra_repr(self) -> str:
        tp = f", rows [{self.vocab_start}, {self.vocab_end})" if self.tp.is_parallel else ""
        return f"{self.num_embeddings}, {self.embedding_dim}{tp}"


class ParallelLMHead(Embedding):
    """An untied LM head: a [vocab, hidden] weight split by vocabulary rows like the embedding."""
