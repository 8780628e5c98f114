"""maxcli's C++ GGUF block kernels (maxcli.ops.gguf_cpu) against gguf-py: for every type with a kernel,
random blocks (sane fp16 scales, every other byte random) and odd shapes.

- dequantize: bit-exact against gguf.quants.dequantize.
- the int8 path (fewer than 16 activation rows): equal, to float32 summation error, to a float64 matmul of
  gguf's dequantized weights with the activations quantized the way the kernel quantizes them (int8 per 16
  values, scale max|x| / 127, round half to even).
- the dense path (16 rows or more): within bf16 rounding of the float64 product.
- bad input: one-line errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q
from gguf.quants import dequantize

from maxcli import ops
from maxcli.ops import gguf_cpu

# Offsets of each type's fp16 scale fields inside a block (everything else may be any byte).
SCALE_OFFSETS = {
    Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2], Q.Q8_0: [0],
    Q.Q2_K: [80, 82], Q.Q3_K: [108], Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}
assert set(SCALE_OFFSETS) == set(gguf_cpu.KERNEL_QTYPES)


pytestmark = pytest.mark.usefixtures("cpu_kernels")


def random_rows(qtype: Q, rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values, nbytes = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // values, nbytes), dtype=np.uint8)
    for off in SCALE_OFFSETS[qtype]:
        scales = rng.uniform(-0.05, 0.05, size=(rows, cols // values)).astype(np.float16)
        raw[..., off : off + 2] = scales.view(np.uint8).reshape(rows, cols // values, 2)
    return raw.reshape(rows, -1)


def quantized_activations(x: torch.Tensor) -> torch.Tensor:
    """x as the kernel sees it: int8 codes per 16 values times max|x| / 127 over those 16."""
    groups = x.reshape(x.shape[0], -1, 16)
    d = groups.abs().amax(-1, keepdim=True) / 127
    inv = torch.where(d > 0, 1 / d, torch.zeros_like(d))
    return (torch.round(groups * inv) * d).reshape(x.shape)


SHAPES = [(1, 17, 256), (2, 9, 256), (3, 33, 512), (5, 7, 768), (4, 64, 256), (6, 5, 512), (7, 3, 256), (9, 1, 512)]


@pytest.mark.parametrize("qtype", sorted(SCALE_OFFSETS, key=int), ids=lambda q: q.name)
def test_dequantize_is_bit_exact(qtype: Q) -> None:
    raw = random_rows(qtype, 37, 512, seed=int(qtype))
    want = dequantize(raw, qtype).reshape(37, 512)
    got = ops.gguf_dequantize(torch.from_numpy(raw), qtype, 512)
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(want, dtype=np.float32)))


@pytest.mark.parametrize("qtype", sorted(SCALE_OFFSETS, key=int), ids=lambda q: q.name)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_int8_path_matches_float64_on_quantized_activations(qtype: Q, shape: tuple[int, int, int]) -> None:
    m, n, k = shape
    raw = random_rows(qtype, n, k, seed=m * 1000 + n)
    w = torch.from_numpy(dequantize(raw, qtype).reshape(n, k)).double()
    g = torch.Generator().manual_seed(n)
    x, bias = 3 * torch.randn(m, k, generator=g), torch.randn(n, generator=g)
    x[:, 5] *= 50  # an outlier channel, as real hidden states have
    got = ops.gguf_linear(x, [torch.from_numpy(raw)], [qtype], [n], bias)
    want = quantized_activations(x).double() @ w.T + bias.double()
    assert got.dtype == torch.float32 and got.shape == (m, n)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())
    exact = x.double() @ w.T + bias.double()
    assert (got.double() - exact).abs().max() > 1e-6  # activations really are quantized on this path


@pytest.mark.parametrize("qtype", sorted(SCALE_OFFSETS, key=int), ids=lambda q: q.name)
def test_int8_rows_do_not_depend_on_the_batch(qtype: Q) -> None:
    """Under 16 rows each output row is bit-identical to that row multiplied alone, whatever tile (4, 3,
    2 or 1 rows) it falls in: speculative decoding's exactness rests on it."""
    n, k = 19, 512
    raw = torch.from_numpy(random_rows(qtype, n, k, seed=int(qtype) + 7))
    x = 2 * torch.randn(15, k, generator=torch.Generator().manual_seed(int(qtype)))
    alone = torch.cat([ops.gguf_linear(x[i:i + 1], [raw], [qtype], [n], None) for i in range(15)])
    for m in (2, 3, 4, 5, 6, 7, 11, 15):
        assert torch.equal(ops.gguf_linear(x[:m], [raw], [qtype], [n], None), alone[:m]), m


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.Q3_K], ids=lambda q: q.name)
def test_dense_path_matches_float64_within_bf16(qtype: Q) -> None:
    m, n, k = 40, 1100, 512  # 1100 rows: more than one dequantized row block
    raw = random_rows(qtype, n, k, seed=7)
    w = torch.from_numpy(dequantize(raw, qtype).reshape(n, k)).double()
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(3))
    got = ops.gguf_linear(x, [torch.from_numpy(raw)], [qtype], [n])
    want = x.double() @ w.T
    err = ((got.double() - want).norm() / want.norm()).item()
    assert err < 1e-2, err


def test_fused_parts_of_different_types_side_by_side() -> None:
    """q, k, v of three types (Q4_K_M stores attn_v as Q6_K beside Q4_K q and k), one bias over all."""
    k = 256
    parts = [(Q.Q4_K, 48), (Q.Q5_0, 16), (Q.Q6_K, 16)]
    raws = [random_rows(q, n, k, seed=i) for i, (q, n) in enumerate(parts)]
    x, bias = torch.randn(3, k), torch.randn(80)
    got = ops.gguf_linear(x, [torch.from_numpy(r) for r in raws], [q for q, _ in parts], [n for _, n in parts], bias)
    w = torch.cat([torch.from_numpy(dequantize(r, q).reshape(n, k)) for r, (q, n) in zip(raws, parts)]).double()
    want = quantized_activations(x).double() @ w.T + bias.double()
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_types_without_a_kernel_run_dequantized() -> None:
    from gguf.quants import quantize

    values = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    raw = torch.from_numpy(quantize(values, Q.BF16).view(np.uint8).reshape(8, -1))
    x = torch.randn(2, 256)
    got = ops.gguf_linear(x, [raw], [Q.BF16], [8])
    w = torch.from_numpy(dequantize(raw.numpy(), Q.BF16).reshape(8, 256))
    torch.testing.assert_close(got, x @ w.T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda raw: torch.ops.maxcli_cpu.gguf_linear(torch.randn(1, 256), [raw], [99], [4], None), "no GGUF kernel for GGML type 99"),
        (lambda raw: torch.ops.maxcli_cpu.gguf_linear(torch.randn(1, 256), [raw[:, :-1].contiguous()], [int(Q.Q4_0)], [4], None), "need"),
        (lambda raw: torch.ops.maxcli_cpu.gguf_linear(torch.randn(1, 96), [raw], [int(Q.Q4_K)], [4], None), "whole blocks of 256"),
        (lambda raw: torch.ops.maxcli_cpu.gguf_linear(torch.randn(1, 100), [raw], [int(Q.Q4_0)], [4], None), "whole blocks of 32"),
        (lambda raw: torch.ops.maxcli_cpu.gguf_dequantize(raw, int(Q.Q4_0), 200), "whole blocks"),
    ],
)
def test_bad_input_is_one_line_error(call, message: str) -> None:
    raw = torch.from_numpy(random_rows(Q.Q4_0, 4, 256, seed=0))
    with pytest.raises(RuntimeError) as info:
        call(raw)
    first = str(info.value).strip().splitlines()[0]
    assert message in first, first
