"""A minimal paged-KV runner for model tests, and the HF reference it is compared with.

Pages come from a shuffled pool so block tables are non-contiguous; unwritten cache slots hold large
random values, so a mask that lets an unwritten or foreign slot through shows up in the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from maxcli.nn import bind_kv_caches
from maxcli.nn.attention_metadata import AttentionMetadata, attention_metadata


@dataclass
class Sequence:
    tokens: list[int] = field(default_factory=list)  # tokens whose K/V are in the cache
    blocks: list[int] = field(default_factory=list)


class PagedRunner:
    def __init__(
        self,
        model: nn.Module,
        cache_shape: tuple[int, int, int],
        page_size: int = 4,
        num_blocks: int = 48,
        seed: int = 0,
    ) -> None:
        layers, kv_heads, head_dim = cache_shape
        g = torch.Generator().manual_seed(seed)
        shape = (num_blocks, page_size, kv_heads, head_dim)
        self.caches = [(100 * torch.randn(shape, generator=g), 100 * torch.randn(shape, generator=g)) for _ in range(layers)]
        bind_kv_caches(model, self.caches)
        self.model, self.page_size = model, page_size
        self.free_blocks = torch.randperm(num_blocks, generator=g).tolist()

    def step(self, seqs: list[Sequence], new_tokens: list[list[int]]) -> list[torch.Tensor]:
        """Run one batched forward of `new_tokens[i]` appended to `seqs[i]`; logits [n_i, vocab] each."""
        ids, positions, slots, q_lens, k_lens = [], [], [], [], []
        for seq, new in zip(seqs, new_tokens):
            start, end = len(seq.tokens), len(seq.tokens) + len(new)
            while len(seq.blocks) * self.page_size < end:
                seq.blocks.append(self.free_blocks.pop())
            for p in range(start, end):
                slots.append(seq.blocks[p // self.page_size] * self.page_size + p % self.page_size)
            ids += new
            positions += range(start, end)
            q_lens.append(len(new))
            k_lens.append(end)
            seq.tokens += new
        max_blocks = max(len(s.blocks) for s in seqs)
        block_tables = torch.tensor([s.blocks + [0] * (max_blocks - len(s.blocks)) for s in seqs], dtype=torch.int32)
        cu = torch.tensor([0] + q_lens, dtype=torch.int32).cumsum(0, dtype=torch.int32)
        meta = AttentionMetadata(
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            block_tables=block_tables,
            cu_seqlens_q=cu,
            seq_lens_k=torch.tensor(k_lens, dtype=torch.int32),
            max_seqlen_q=max(q_lens),
            max_seqlen_k=max(k_lens),
            is_decode=all(n == 1 for n in q_lens),
        )
        with torch.inference_mode(), attention_metadata(meta):
            hidden = self.model(torch.tensor(ids, dtype=torch.int64), torch.tensor(positions, dtype=torch.int64))
            logits = self.model.compute_logits(hidden)
        return list(logits.split(q_lens))


def randomize_(model: nn.Module, seed: int) -> None:
    """Weights large enough that logits are O(1..10): matrices ~ N(0, 1/fan_in), vectors (norm weights,
    biases) moved off their init by N(0, 0.2^2), so every parameter visibly changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 2:
                p.copy_(noise / math.sqrt(p.shape[1]))
            else:
                p.add_(0.2 * noise)


class HFReference:
    """One HF model run per sequence with its own DynamicCache: prefill, then one token per call."""

    def __init__(self, hf_model: nn.Module) -> None:
        self.model = hf_model.eval()
        self.caches: dict[int, object] = {}

    @torch.inference_mode()
    def step(self, seq_id: int, new_tokens: list[int]) -> torch.Tensor:
        out = self.model(
            input_ids=torch.tensor([new_tokens]),
            past_key_values=self.caches.get(seq_id),
            use_cache=True,
        )
        self.caches[seq_id] = out.past_key_values
        return out.logits[0].float()
