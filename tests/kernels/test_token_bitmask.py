"""The C++ token-bitmask kernel (structured outputs) against its torch reference: random masks (all, none and
mixed words), vocabularies that do not fill the last word, and masks shorter than the logits row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxcli.ops import torch_ref


@pytest.mark.parametrize(("rows", "vocab", "words"), [(1, 49152, 1536), (3, 1000, 32), (5, 37, 2), (2, 100, 3)])
def test_cpp_kernel_matches_reference(cpu_kernels: None, rows: int, vocab: int, words: int) -> None:
    g = torch.Generator().manual_seed(vocab)
    allowed = torch.rand(rows, words * 32, generator=g) < 0.3
    allowed[:, :64] = True  # whole words of ones
    allowed[:, 64:128] = False  # whole words of zeros
    packed = torch.from_numpy(np.packbits(allowed.numpy(), axis=1, bitorder="little").view(np.int32).copy())
    logits = torch.randn(rows, vocab, generator=g)
    expected = logits.clone()
    torch_ref.apply_token_bitmask_(expected, packed)
    got = logits.clone()
    torch.ops.maxcli_cpu.apply_token_bitmask_(got, packed)
    assert torch.equal(got, expected)
    keep = allowed[:, :vocab]
    if vocab > words * 32:
        keep = torch.cat([keep, torch.zeros(rows, vocab - words * 32, dtype=torch.bool)], dim=1)
    assert torch.equal(torch.isfinite(got), keep)
