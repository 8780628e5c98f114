"""Triton GGUF matmul against dequantize-then-matmul, for every quant type with a kernel, on the GEMV
(decode) and GEMM (prefill) paths, plus a bit-exact check of the in-register dequantization."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize
from kernel_testlib import Q, gguf_rows

from maxcli.ops import quant_matmul

pytest.importorskip("triton")
from maxcli.kernels import quant_matmul as kernel  # noqa: E402  (after the skip)

QTYPES = sorted(kernel.KERNEL_QTYPES, key=int)
REQUIRED = {Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.Q4_K, Q.Q6_K}


def _dequantized(raw: np.ndarray, qtype: GGMLQuantizationType) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(dequantize(raw, qtype), dtype=np.float32))


def test_every_required_type_has_a_kernel():
    assert REQUIRED <= kernel.KERNEL_QTYPES


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
def test_dequantized_tile_is_bit_exact(qtype, device):
    # x = identity makes y = W.T exactly (products with 1.0, sums with 0.0), through the GEMM path.
    raw = gguf_rows(qtype, 5, 256, seed=int(qtype))
    got = kernel.gguf_matmul(torch.eye(256, device=device), torch.from_numpy(raw).to(device), qtype, 5, 256)
    assert torch.equal(got.t().cpu(), _dequantized(raw, qtype))


@pytest.mark.parametrize("qtype", QTYPES, ids=lambda q: q.name)
@pytest.mark.parametrize("rows", [1, 3, 21])
def test_gguf_matmul_matches_dequantize_then_matmul(qtype, rows, device):
    n, k = 37, 512  # n not a multiple of the tile; k spans several K-quant super-blocks
    raw = gguf_rows(qtype, n, k, seed=int(qtype) + rows)
    x = torch.randn(rows, k, device=device)
    got = kernel.gguf_matmul(x, torch.from_numpy(raw).to(device), qtype, n, k)
    want = x.cpu() @ _dequantized(raw, qtype).T
    scale = want.abs().max()
    torch.testing.assert_close(got.cpu() / scale, want / scale, atol=1e-5, rtol=0)
    torch.testing.assert_close(got, quant_matmul.gguf_matmul(x, torch.from_numpy(raw).to(device), qtype, n, k),
                               atol=float(scale) * 1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_gguf_matmul_16bit_activations(dtype, device):
    qtype = GGMLQuantizationType.Q4_K
    raw = torch.from_numpy(gguf_rows(qtype, 24, 256)).to(device)
    for rows in (2, 18):
        x = torch.randn(3, rows, 256, device=device).to(dtype)
        got = kernel.gguf_matmul(x, raw, qtype, 24, 256)
        want = quant_matmul.gguf_matmul(x, raw, qtype, 24, 256)
        assert got.shape == (3, rows, 24) and got.dtype == dtype
        scale = float(want.float().abs().max())
        torch.testing.assert_close(got.float(), want.float(), atol=scale * 2e-2, rtol=2e-2)


def test_real_smollm2_q4_1_and_q8_0_rows(device, smollm2_gguf: Path):
    reader = GGUFReader(smollm2_gguf)
    tensors = {t.name: t for t in reader.tensors}
    for name, rows in (("blk.0.ffn_down.weight", 40), ("token_embd.weight", 24)):
        t = tensors[name]
        raw = np.array(t.data[:rows])  # a writable copy of the memory-mapped rows
        k = int(t.shape[0])
        x = torch.randn(2, k, device=device)
        got = kernel.gguf_matmul(x, torch.from_numpy(raw).to(device), t.tensor_type, rows, k)
        want = x.cpu() @ _dequantized(raw, t.tensor_type).T
        torch.testing.assert_close(got.cpu(), want, atol=1e-4, rtol=1e-4)


def test_gguf_matmul_kernel_rejects_bad_input(device):
    raw = torch.from_numpy(gguf_rows(GGMLQuantizationType.Q8_0, 4, 64)).to(device)
    with pytest.raises(ValueError, match="no Triton kernel for GGUF type Q2_K"):
        kernel.gguf_matmul(torch.randn(1, 256, device=device), raw, GGMLQuantizationType.Q2_K, 4, 256)
    with pytest.raises(ValueError, match="needs raw uint8"):
        kernel.gguf_matmul(torch.randn(1, 64, device=device), raw[:, :10], GGMLQuantizationType.Q8_0, 4, 64)
