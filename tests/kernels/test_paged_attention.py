"""Triton paged attention against torch_ref.paged_attention: prefill, chunked prefill over a cached
prefix, decode (with and without split-K), GQA 1/3/8, head dims 16..256, windows, soft-capping."""

from __future__ import annotations

import pytest
import torch
from kernel_testlib import paged_batch, tolerance

from maxcli.ops import torch_ref

pytest.importorskip("triton")
from maxcli.kernels import paged_attention as kernel  # noqa: E402  (after the skip)

CASES = {
    # name: (q_lens, k_lens, H, Hk, D, page, window, softcap)
    "prefill_odd_lengths": ([5, 1, 19], [5, 1, 19], 2, 2, 16, 8, None, None),
    "chunked_prefill_prefix_gqa3": ([3, 18], [21, 30], 3, 1, 32, 8, None, None),
    "mixed_decode_prefill": ([1, 6], [13, 6], 4, 4, 64, 4, None, None),
    "prefill_window_softcap": ([17, 4], [17, 25], 2, 1, 32, 8, 6, 2.5),
    "decode_gqa8": ([1, 1, 1], [1, 16, 33], 8, 1, 64, 16, None, None),
    "decode_gqa3_window_softcap": ([1, 1], [40, 9], 6, 2, 16, 16, 11, 4.0),
    "decode_head128": ([1, 1], [7, 18], 2, 1, 128, 16, None, None),
    "prefill_head128": ([9], [12], 1, 1, 128, 8, None, None),
    "decode_head256": ([1], [20], 3, 3, 256, 16, None, None),
    "prefill_head256_window": ([5], [21], 1, 1, 256, 16, 7, None),
    "head80_not_pow2": ([6, 1], [6, 10], 2, 2, 80, 4, None, None),
    "page_size_1": ([3, 1], [4, 3], 2, 1, 16, 1, None, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_paged_attention_matches_reference(name, device):
    q_lens, k_lens, h, hk, d, page, window, cap = CASES[name]
    batch = paged_batch(q_lens, k_lens, h, hk, d, page, device=device, strided_cache=True)
    got = kernel.paged_attention(*batch.args(), window, cap)
    want = torch_ref.paged_attention(*batch.args(), window, cap)
    torch.testing.assert_close(got, want, **tolerance(torch.float32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("q_lens, k_lens", [([4, 1], [9, 1]), ([1, 1], [3, 30])])
def test_paged_attention_16bit(dtype, q_lens, k_lens, device):
    batch = paged_batch(q_lens, k_lens, 4, 2, 32, 8, dtype=dtype, device=device)
    got = kernel.paged_attention(*batch.args())
    want = torch_ref.paged_attention(*batch.args())
    assert got.dtype == dtype
    torch.testing.assert_close(got.float(), want.float(), **tolerance(dtype))


@pytest.mark.parametrize("splits", [2, 3, 5])
@pytest.mark.parametrize("window, cap", [(None, None), (13, 3.0)])
def test_split_k_decode_matches_reference(splits, window, cap, device):
    # Short sequences leave some splits empty; they must contribute nothing.
    batch = paged_batch([1, 1, 1], [70, 2, 33], 4, 2, 16, 8, device=device, seed=splits)
    got = kernel.paged_attention(*batch.args(), window, cap, num_splits=splits)
    want = torch_ref.paged_attention(*batch.args(), window, cap)
    torch.testing.assert_close(got, want, **tolerance(torch.float32))


def test_default_split_heuristic_splits_only_long_contexts():
    assert kernel.default_num_splits(4, 200, torch.device("cpu")) == 1
    assert kernel.default_num_splits(1, 8192, torch.device("cpu")) > 1
    assert kernel.default_num_splits(1, 1 << 20, torch.device("cpu")) <= kernel.MAX_SPLITS


def test_decode_with_empty_sequence_leaves_other_rows_correct(device):
    # A sequence with no new token this step (cu_seqlens repeats) is skipped by the decode kernels.
    batch = paged_batch([1, 1, 1], [9, 5, 12], 2, 1, 16, 4, device=device)
    batch.cu_seqlens_q = torch.tensor([0, 1, 1, 2], dtype=torch.int32, device=device)
    batch.q = batch.q[:2]
    for splits in (1, 2):
        got = kernel.paged_attention(*batch.args(), num_splits=splits)
        torch.testing.assert_close(got, torch_ref.paged_attention(*batch.args()), **tolerance(torch.float32))


def test_paged_attention_rejects_bad_shapes(device):
    batch = paged_batch([2], [2], 3, 2, 16, 4, device=device)
    with pytest.raises(ValueError, match="do not fit cache heads"):
        kernel.paged_attention(*batch.args())
    batch = paged_batch([2], [2], 2, 1, 16, 4, device=device)
    with pytest.raises(ValueError, match="disagree on the batch size"):
        kernel.paged_attention(batch.q, batch.k_cache, batch.v_cache, batch.block_tables,
                               batch.cu_seqlens_q[:1], batch.seq_lens_k, 2, 2, 1.0)
