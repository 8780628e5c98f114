"""The tensors one forward step needs, built in one place from the scheduled (context, num_new_tokens).

Cost per step: O(B) Python (one slice of token ids and one cached page-table tensor per sequence)
plus a handful of vectorized torch ops over the T packed tokens; no per-token Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch
from torch.nn.utils.rnn import pad_sequence

from maxcli.nn.attention_metadata import AttentionMetadata

if TYPE_CHECKING:
    from maxcli.kv_cache.paged_cache import PagedKVCacheManager
    from maxcli.pipelines.core.context import TextContext


@dataclass
class StepInputs:
    """input_ids / positions [T] int64, packed in batch order; `attention` carries the paged metadata.

    attention.logits_indices [R] selects the packed rows whose logits the sampler needs: the last new
    token of each sequence whose chunk reaches the end of its tokens, in the order of `sample_contexts`;
    a sequence fed with drafted tokens has one row per fed token (`rows_per_context`).
    """

    input_ids: torch.Tensor
    positions: torch.Tensor
    attention: AttentionMetadata
    sample_contexts: list[TextContext]
    rows_per_context: list[int] | None = None  # None: one row each
    fed_per_context: list[int] | None = None  # tokens packed for each context of the batch, in batch order


def empty_step_inputs(device: torch.device) -> StepInputs:
    """The inputs of a step over no sequence (for architectures that step empty batches)."""
    long = torch.zeros(0, dtype=torch.int64, device=device)
    attention = AttentionMetadata(
        slot_mapping=long, block_tables=torch.zeros(0, 1, dtype=torch.int32, device=device),
        cu_seqlens_q=torch.zeros(1, dtype=torch.int32, device=device), seq_lens_k=torch.zeros(0, dtype=torch.int32, device=device),
        max_seqlen_q=0, max_seqlen_k=0, is_decode=False, logits_indices=long,
    )
    return StepInputs(input_ids=long, positions=long, attention=attention, sample_contexts=[], fed_per_context=[])


def build_step_inputs(
    kv: PagedKVCacheManager,
    batch: Sequence[tuple[TextContext, int]],
    device: str | torch.device | None = None,
    drafts: Mapping[Any, list[int]] | None = None,
) -> StepInputs:
    """Pack the new tokens [num_computed_tokens, num_computed_tokens + n) of each context.

    A context in `drafts` (request id -> drafted tokens) is a decode fed its last token followed by the
    drafts: n = 1 + len(draft), and every one of those positions gets a logits row.
    Pages must already cover those positions (kv.alloc); raises ValueError otherwise.
    """
    if not batch:
        raise ValueError("cannot build step inputs for an empty batch")
    device = kv.device if device is None else torch.device(device)
    ps = kv.page_size
    ids: list[int] = []
    starts: list[int] = []
    lens: list[int] = []
    tables: list[torch.Tensor] = []
    sample_rows: list[int] = []
    sample_contexts: list[TextContext] = []
    rows_per_context: list[int] = []
    drafts = drafts or {}
    for b, (ctx, n) in enumerate(batch):
        start = ctx.num_computed_tokens
        draft = drafts.get(ctx.request_id, ())
        end = start + n - len(draft)  # the context's own tokens end here; drafts follow
        if draft and (n != 1 + len(draft) or end != len(ctx.tokens)):
            raise ValueError(f"request {ctx.request_id}: a draft follows a decode's last token, got n={n}")
        if n < 1 or end > len(ctx.tokens):
            raise ValueError(
                f"request {ctx.request_id}: cannot feed {n} tokens from position {start} of {len(ctx.tokens)}"
            )
        table = kv.block_table_tensor(ctx.request_id)
        if table.numel() * ps < start + n:
            raise ValueError(f"request {ctx.request_id}: KV pages cover {table.numel() * ps} of {start + n} positions")
        ids.extend(ctx.tokens[start:end])
        ids.extend(draft)
        starts.append(start)
        lens.append(n)
        tables.append(table)
        if end == len(ctx.tokens):
            sample_rows.append(b)
            sample_contexts.append(ctx)
            rows_per_context.append(n if draft else 1)

    block_tables = pad_sequence(tables, batch_first=True, padding_value=0)  # [B, max_pages] int32
    lens_t = torch.tensor(lens, dtype=torch.int64)
    starts_t = torch.tensor(starts, dtype=torch.int64)
    cu = torch.zeros(len(lens) + 1, dtype=torch.int64)
    torch.cumsum(lens_t, 0, out=cu[1:])
    if len(ids) == len(lens):  # pure decode: one token per sequence
        seq_idx = torch.arange(len(lens))
        positions = starts_t
    else:
        seq_idx = torch.repeat_interleave(torch.arange(len(lens)), lens_t)
        positions = torch.arange(len(ids)) - cu[:-1][seq_idx] + starts_t[seq_idx]
    slot_mapping = block_tables[seq_idx, positions // ps].to(torch.int64) * ps + positions % ps
    seq_lens_k = starts_t + lens_t
    max_q, max_k = max(lens), max(s + n for s, n in zip(starts, lens))
    fed = list(lens)
    decode_sequences = None
    logits_indices = cu[1:][torch.tensor(sample_rows, dtype=torch.int64)] - 1
    if drafts:  # a drafted sequence's rows are all its fed positions
        last = logits_indices.tolist()
        logits_indices = torch.tensor([i for end_row, r in zip(last, rows_per_context)
                                       for i in range(end_row - r + 1, end_row + 1)], dtype=torch.int64)
        if all(c.active_length == 1 and n == 1 + len(drafts.get(c.request_id, ())) for c, n in batch):
            # Decodes only: each fed token (a drafted one too) is a row of its own that attends to the
            # positions up to it. Every layer writes all rows' K/V before any row attends, so this is causal
            # attention, and each row's arithmetic is that of a one-token decode (the fused decode step
            # takes it as is).
            block_tables, seq_lens_k = block_tables[seq_idx], positions + 1
            cu = torch.arange(len(ids) + 1, dtype=torch.int64)
            max_q, lens = 1, [1] * len(ids)
            decode_sequences = len(batch)

    def to(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return t.to(device=device, dtype=dtype, non_blocking=True)

    attention = AttentionMetadata(
        slot_mapping=to(slot_mapping, torch.int64),
        block_tables=to(block_tables, torch.int32),
        cu_seqlens_q=to(cu, torch.int32),
        seq_lens_k=to(seq_lens_k, torch.int32),
        max_seqlen_q=max_q,
        max_seqlen_k=max_k,
        is_decode=len(ids) == len(lens),
        logits_indices=to(logits_indices, torch.int64),
        num_decode_sequences=decode_sequences,
    )
    return StepInputs(
        input_ids=to(torch.tensor(ids, dtype=torch.int64), torch.int64),
        positions=to(positions, torch.int64),
        attention=attention,
        sample_contexts=sample_contexts,
        rows_per_context=rows_per_context if drafts else None,
        fed_per_context=fed,
    )


def build_next_decode_inputs(
    kv: PagedKVCacheManager, prev: AttentionMetadata, request_ids: Sequence[Any], next_tokens: torch.Tensor
) -> StepInputs:
    """The decode step after a step whose attention metadata is `prev`: each sampled sequence of that step
    (its logits rows, in `request_ids` order) feeds the token it drew at the next position. The caller has
    appended the tokens to the contexts and allocated their pages (kv.alloc); `sample_contexts` is left
    empty (the rows are `request_ids`)."""
    assert prev.logits_indices is not None
    ps = kv.page_size
    device = kv.device
    rows = torch.searchsorted(prev.cu_seqlens_q[1:].long(), prev.logits_indices.long(), right=True)
    seq_lens = prev.seq_lens_k.long()[rows] + 1
    positions = seq_lens - 1
    tables = [kv.block_table_tensor(r) for r in request_ids]
    block_tables = pad_sequence(tables, batch_first=True).to(device)
    slots = block_tables.long().gather(1, (positions // ps)[:, None])[:, 0] * ps + positions % ps
    B = len(tables)
    attention = AttentionMetadata(
        slot_mapping=slots,
        block_tables=block_tables,
        cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32, device=device),
        seq_lens_k=seq_lens.to(torch.int32),
        max_seqlen_q=1,
        max_seqlen_k=int(seq_lens.max()),
        is_decode=True,
        logits_indices=torch.arange(B, device=device),
    )
    return StepInputs(input_ids=next_tokens.reshape(-1).to(device=device, dtype=torch.int64), positions=positions,
                      attention=attention, sample_contexts=[])
