"""Two-stage LM head for the packed CPU path (PipelineConfig.cpu_quantized_matmul).

logits = hidden @ W^T with W [V, H] the float32 head (tied embedding or lm_head). Reading W costs
V * H * 4 bytes per step (113 MB for SmolLM2's 49152 x 576), the largest single cost of a packed decode
step. Instead:

1. approximate logits for the whole vocabulary from a compact copy of W: int8 codes with one scale per
   row (`_weight_int8pack_mm`, bf16 activations; a quarter of the bytes), or bf16 (half);
2. the top `k` approximate candidates of each row are recomputed in float32 from the float W rows
   (a gather of k rows and k dot products) and written back over the approximate values.

Invariants: the returned logits are float32 [N, V]; the k candidates of each row hold float32 dot
products of the same W rows the exact head reads (equal to F.linear up to summation order, ~1e-5), the
other V - k entries hold the approximation. Greedy argmax equals the exact head's whenever the exact
winner is among the approximate top k (measured: always, even at k = 8, over 568 teacher-forced tokens),
and sampling / logprobs see exact values for every plausible token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from maxcli.ops.cpu_quant import ACTIVATION_DTYPE, int8_matmul, int8_rows

DEFAULT_TOP_K = 64
APPROXIMATIONS = ("int8", "bf16")


class TwoStageLMHead(nn.Module):
    """forward(hidden [N, H], weight [V, H]) -> float32 logits [N, V] (see the module docstring).

    The compact copy is built from `weight` by `prepare` (at load) or on the first call, and rebuilt
    whenever a different weight tensor is passed; it is a buffer-free attribute so the module adds
    nothing to state_dict. Memory: V * H bytes (int8) or 2 V H (bf16) beside the float W; with
    `dense_min_rows`, inputs of that many rows or more are approximated by a bf16 GEMM (2 V H bytes more for
    int8), which beats the int8 kernel once the step is compute-bound.
    """

    def __init__(self, top_k: int = DEFAULT_TOP_K, approx: str = "int8", dense_min_rows: int | None = None) -> None:
        super().__init__()
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if approx not in APPROXIMATIONS:
            raise ValueError(f"approx must be one of {APPROXIMATIONS}, got {approx!r}")
        self.top_k, self.approx, self.dense_min_rows = top_k, approx, dense_min_rows
        self._source: torch.Tensor | None = None
        self._compact: tuple[torch.Tensor, ...] = ()
        self._dense: torch.Tensor | None = None  # bf16 W for inputs of dense_min_rows rows or more

    @torch.no_grad()
    def prepare(self, weight: torch.Tensor) -> None:
        """Build the compact copy of `weight` [V, H]. Cost: one pass over W."""
        if self.approx == "int8":
            q = int8_rows(weight)
            self._compact = (q.codes, q.scales)
        else:
            self._compact = (weight.detach().to(ACTIVATION_DTYPE),)
        if self.dense_min_rows is not None:
            self._dense = self._compact[0] if self.approx == "bf16" else weight.detach().to(ACTIVATION_DTYPE)
        self._source = weight

    def approximate(self, hidden: torch.Tensor) -> torch.Tensor:
        """Stage 1: float32 [N, V] approximate logits of float hidden [N, H]."""
        if self._dense is not None and hidden.shape[0] >= self.dense_min_rows:
            return F.linear(hidden.to(ACTIVATION_DTYPE), self._dense).float()  # compute-bound: bf16 GEMM
        if self.approx == "int8":
            return int8_matmul(hidden, *self._compact)
        return F.linear(hidden.to(ACTIVATION_DTYPE), self._compact[0]).float()

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if weight is not self._source:
            self.prepare(weight)
        h = hidden.to(weight.dtype)
        logits = self.approximate(h).float()
        n, vocab = logits.shape
        k = min(self.top_k, vocab)
        idx = logits.topk(k, dim=-1, sorted=False).indices  # [N, k]
        rows = weight.index_select(0, idx.reshape(-1)).view(n, k, -1)  # [N, k, H]: N*k*H*4 bytes read
        exact = torch.bmm(rows, h[:, :, None])[..., 0]
        return logits.scatter_(1, idx, exact.float())

    def extra_repr(self) -> str:
        return f"top_k={self.top_k}, approx={self.approx}"
