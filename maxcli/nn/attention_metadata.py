"""Per-step attention metadata. The model runner sets it around each forward; attention layers read it,
so `forward(input_ids, positions)` stays the only model signature and the engine never changes per model.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass
class AttentionMetadata:
    """Tokens of all sequences in the step are packed along dim 0 (varlen, no padding).

    - slot_mapping [T] int64: cache slot (block * block_size + offset) for each new token's K/V; -1 = skip.
    - block_tables [B, max_blocks] int32: physical block ids of each sequence, padded with 0.
    - cu_seqlens_q [B+1] int32: offsets of each sequence's new tokens in the packed batch.
    - seq_lens_k [B] int32: context length of each sequence after this step (cached + new tokens).
    - max_seqlen_q / max_seqlen_k: the maxima of those, as Python ints (no device sync needed).
    New token i of sequence b sits at position seq_lens_k[b] - q_len[b] + i and attends causally.
    """

    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    cu_seqlens_q: torch.Tensor
    seq_lens_k: torch.Tensor
    max_seqlen_q: int
    max_seqlen_k: int
    is_decode: bool = False  # every sequence has exactly one new token
    logits_indices: torch.Tensor | None = None  # rows of the packed batch whose logits are needed
    # a decode step whose rows include drafted tokens: the sequences it decodes (fewer than its rows)
    num_decode_sequences: int | None = None


class _StepState(threading.local):
    """Per thread: data-parallel replicas run their forwards concurrently, one engine thread each."""

    current: AttentionMetadata | None = None


_state = _StepState()


def get_attention_metadata() -> AttentionMetadata:
    meta = _state.current
    if meta is None:
        raise RuntimeError("no attention metadata set: call the model inside attention_metadata(...)")
    return meta


@contextlib.contextmanager
def attention_metadata(meta: AttentionMetadata | None) -> Iterator[None]:
    prev, _state.current = _state.current, meta
    try:
        yield
    finally:
        _state.current = prev
