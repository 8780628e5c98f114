"""Packed CPU weights reproduce the GGUF values: the int4 mapping exactly (float32 rounding), the kernels
to bfloat16 rounding, Q8_0's per-row requantization to half a row step; bad input is a one-line error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize

from maxcli.nn.linear import MergedColumnLinear
from maxcli.nn.quantized import QuantizedLinear
from maxcli.ops import cpu_quant

Q = GGMLQuantizationType


def gguf_values(raw: torch.Tensor, qtype: Q, k: int) -> torch.Tensor:
    return torch.from_numpy(dequantize(raw.numpy(), qtype).astype(np.float32)).reshape(raw.shape[0], k)


def random_blocks(qtype: Q, n: int, k: int, seed: int = 0) -> torch.Tensor:
    """Random codes with small positive fp16 block scales (d, and dmin/m where the type has one)."""
    g = torch.Generator().manual_seed(seed)
    elems, nbytes = GGML_QUANT_SIZES[qtype]
    raw = torch.randint(0, 256, (n, k // elems, nbytes), dtype=torch.uint8, generator=g)
    scales = 2 if qtype in (Q.Q4_1, Q.Q4_K) else 1
    d = (torch.rand(n, k // elems, scales, generator=g) * 0.01 + 1e-3).half()
    raw[..., : 2 * scales] = d.view(torch.uint8).view(n, k // elems, 2 * scales)
    return raw.reshape(n, -1)


def real_tensor(path: Path, name: str) -> tuple[torch.Tensor, Q, int]:
    t = next(t for t in GGUFReader(path).tensors if t.name == name)
    k = int(t.shape[0])
    raw = torch.from_numpy(np.array(t.data, dtype=np.uint8)).reshape(int(t.shape[1]), -1)
    return raw, t.tensor_type, k


def kernel_rows(w: cpu_quant.PackedWeight) -> torch.Tensor:
    """W [N, K] as the kernel sees it: identity activations (bf16-exact) times W^T."""
    return w.matmul(torch.eye(w.in_features)).t()


@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q4_K])
def test_int4_mapping_is_exact_and_kernel_matches_to_bf16(qtype: Q) -> None:
    n, k = 48, 512
    raw = random_blocks(qtype, n, k)
    want = gguf_values(raw, qtype, k)
    codes, scale, zero = cpu_quant.int4_codes_scales_zeros(raw, qtype, k)
    assert int(codes.min()) >= 0 and int(codes.max()) <= 15
    mapped = (codes - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)
    torch.testing.assert_close(mapped, want, rtol=1e-6, atol=1e-6)
    got = kernel_rows(cpu_quant.pack_int4(raw, qtype, k))
    # bf16 scale and zero (8-bit mantissa) times codes up to 8 away from the zero point
    bound = 2.0**-8 * (8 * scale.abs() + zero.abs()).repeat_interleave(32, 1) + 2.0**-8 * want.abs()
    assert bool(((got - want).abs() <= bound).all())


def test_real_q4_1_projection_round_trips(smollm2_gguf: Path) -> None:
    raw, qtype, k = real_tensor(smollm2_gguf, "blk.0.ffn_gate.weight")
    assert qtype is Q.Q4_1
    want = gguf_values(raw, qtype, k)
    codes, scale, zero = cpu_quant.int4_codes_scales_zeros(raw, qtype, k)
    mapped = (codes - 8) * scale.repeat_interleave(32, 1) + zero.repeat_interleave(32, 1)
    torch.testing.assert_close(mapped, want, rtol=1e-6, atol=1e-6)
    got = kernel_rows(cpu_quant.pack_int4(raw, qtype, k))
    assert (got - want).abs().max().item() < 2e-2 * want.abs().max().item()


def test_q8_0_requantized_per_row_within_half_a_step(smollm2_gguf: Path) -> None:
    raw, qtype, k = real_tensor(smollm2_gguf, "token_embd.weight")
    raw = raw[:512]
    assert qtype is Q.Q8_0
    want = gguf_values(raw, qtype, k)
    torch.testing.assert_close(cpu_quant.q8_0_values(raw, k), want, rtol=0, atol=0)
    w = cpu_quant.pack_int8(raw, k)
    deq = w.codes.float() * w.scales.float()[:, None]
    step = w.scales.float()[:, None]
    assert bool(((deq - want).abs() <= step / 2 + 1e-7).all())
    x = torch.randn(3, k).bfloat16().float()  # bf16-exact activations: only the bf16 output rounds
    ref = x @ deq.t()
    assert (w.matmul(x) - ref).abs().max().item() <= 2.0**-7 * ref.abs().max().item()


def test_quantized_linear_replaces_a_fused_linear() -> None:
    k = 256
    raw = random_blocks(Q.Q4_1, 96, k, seed=3)
    dense = MergedColumnLinear(k, [64, 32], bias=True)
    with torch.no_grad():
        dense.weight.copy_(gguf_values(raw, Q.Q4_1, k))
        dense.bias.copy_(torch.randn(96))
    q = QuantizedLinear.from_linear(dense, cpu_quant.pack_gguf(raw, Q.Q4_1, k))
    x = torch.randn(5, k)
    want = dense(x)
    torch.testing.assert_close(q(x), want, rtol=0.02, atol=0.05)
    a, b = q.forward_split(x)
    assert a.shape == (5, 64) and b.shape == (5, 32)
    assert q(x[None]).shape == (1, 5, 96)


def test_bad_input_is_a_one_line_error() -> None:
    raw = random_blocks(Q.Q4_1, 16, 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        cpu_quant.pack_int4(raw, Q.Q4_1, 48)
    with pytest.raises(ValueError, match=r"need uint8 \[N, 40\]"):
        cpu_quant.pack_int4(raw[:, :30], Q.Q4_1, 64)
    with pytest.raises(ValueError, match="no packed CPU matmul for Q6_K"):
        cpu_quant.pack_gguf(raw, Q.Q6_K, 64)
    with pytest.raises(ValueError, match="multiple of 16 output rows"):
        cpu_quant.pack_int4(raw[:4], Q.Q4_1, 64)
    assert not cpu_quant.packable(Q.Q4_1, 4, 64) and cpu_quant.packable(Q.Q4_1, 16, 64)
    dense = MergedColumnLinear(64, [8, 8])
    with pytest.raises(ValueError, match="layer is"):
        QuantizedLinear.from_linear(dense, cpu_quant.pack_gguf(random_blocks(Q.Q4_1, 32, 64), Q.Q4_1, 64))
