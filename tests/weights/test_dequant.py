"""Dequantization is bit-exact against gguf.quants.dequantize for every supported GGML type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize as ref_dequantize
from gguf.quants import quantize as ref_quantize

from maxcli.weights import GGUFFile
from maxcli.weights.dequant import (
    dequantize,
    unpack_q4_0,
    unpack_q4_1,
    unpack_q4_k,
    unpack_q6_k,
    unpack_q8_0,
)

ROWS = 6


def _same_bits(actual: torch.Tensor, expected: np.ndarray) -> None:
    expected = np.ascontiguousarray(expected, dtype=np.float32)
    assert actual.dtype == torch.float32
    assert tuple(actual.shape) == expected.shape
    assert torch.equal(actual.view(torch.int32), torch.from_numpy(expected.view(np.int32)))


def _random_values(rng: np.random.Generator, cols: int) -> np.ndarray:
    x = rng.standard_normal((ROWS, cols)).astype(np.float32) * 3
    x[0, :32] = 0.0  # an all-zero block (d == 0 path)
    x[1, :32] = 1.5  # a constant block
    return x


@pytest.mark.parametrize("qtype", [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.BF16, T.F16, T.F32])
def test_quantizable_types_match_reference(qtype: T) -> None:
    rng = np.random.default_rng(int(qtype))
    raw = ref_quantize(_random_values(rng, 256), qtype)
    raw_u8 = torch.from_numpy(np.ascontiguousarray(raw).view(np.uint8).reshape(ROWS, -1).copy())
    _same_bits(dequantize(raw_u8, qtype), ref_dequantize(raw, qtype))


def _random_k_blocks(rng: np.random.Generator, qtype: T, nblk: int) -> np.ndarray:
    """Random bytes with every f16 field (d, dmin) set to a finite random half."""
    _, type_size = GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(ROWS * nblk, type_size), dtype=np.uint8)
    f16_offsets = {T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208]}[qtype]
    for off in f16_offsets:
        halves = (rng.standard_normal(ROWS * nblk) * 0.01).astype(np.float16)
        blocks[:, off : off + 2] = halves.view(np.uint8).reshape(-1, 2)
    return blocks.reshape(ROWS, nblk * type_size)


@pytest.mark.parametrize("qtype", [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K])
def test_k_quants_match_reference_on_random_blocks(qtype: T) -> None:
    raw = _random_k_blocks(np.random.default_rng(int(qtype)), qtype, nblk=3)
    _same_bits(dequantize(torch.from_numpy(raw.copy()), qtype), ref_dequantize(raw, qtype))


def test_real_file_tensors_match_reference(smollm2_gguf) -> None:
    """The SmolLM2 file holds Q4_1, Q8_0 and F32 tensors: check one of each from real bytes."""
    gguf = GGUFFile(smollm2_gguf)
    seen = set()
    for name in ["token_embd.weight", "blk.0.ffn_down.weight", "blk.0.attn_norm.weight", "blk.3.attn_q.weight"]:
        w = gguf.tensors[name]
        raw = w.raw_blocks()
        seen.add(w.qtype)
        expected = ref_dequantize(raw.numpy(), w.qtype).reshape(w.shape)
        _same_bits(w.to_tensor(), expected)
    assert seen == {T.Q4_1, T.Q8_0, T.F32}


def test_unpack_helpers_reconstruct_dequantized_values() -> None:
    rng = np.random.default_rng(7)
    x = _random_values(rng, 256)
    for qtype in (T.Q4_0, T.Q4_1, T.Q8_0):
        raw = torch.from_numpy(ref_quantize(x, qtype).copy())
        expected = dequantize(raw, qtype).view(ROWS, 8, 32)
        if qtype == T.Q4_0:
            scales, q = unpack_q4_0(raw)
            assert q.dtype == torch.int8 and int(q.min()) >= -8 and int(q.max()) <= 7
            assert torch.equal(scales.unsqueeze(-1) * q.float(), expected)
        elif qtype == T.Q4_1:
            scales, mins, q = unpack_q4_1(raw)
            assert int(q.min()) >= 0 and int(q.max()) <= 15
            assert torch.equal(scales.unsqueeze(-1) * q.float() + mins.unsqueeze(-1), expected)
        else:
            scales, q = unpack_q8_0(raw)
            assert torch.equal(q.float() * scales.unsqueeze(-1), expected)
    raw = torch.from_numpy(_random_k_blocks(rng, T.Q4_K, 2))
    scales, mins, q = unpack_q4_k(raw)
    assert scales.shape == (ROWS, 16) and q.shape == (ROWS, 16, 32)
    _same_bits((scales.unsqueeze(-1) * q.float() - mins.unsqueeze(-1)).view(ROWS, -1), ref_dequantize(raw.numpy(), T.Q4_K))
    raw = torch.from_numpy(_random_k_blocks(rng, T.Q6_K, 2))
    scales, q = unpack_q6_k(raw)
    assert scales.shape == (ROWS, 32) and q.shape == (ROWS, 32, 16)
    assert int(q.min()) >= -32 and int(q.max()) <= 31
    _same_bits((scales.unsqueeze(-1) * q.float()).view(ROWS, -1), ref_dequantize(raw.numpy(), T.Q6_K))


def test_bad_raw_input_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not a multiple"):
        dequantize(torch.zeros(2, 19, dtype=torch.uint8), T.Q4_0)
    with pytest.raises(ValueError, match="uint8"):
        dequantize(torch.zeros(2, 18), T.Q4_0)
    with pytest.raises(ValueError, match="not supported"):
        dequantize(torch.zeros(2, 292, dtype=torch.uint8), T.Q8_K)  # gguf-py has no dequantizer for it


def test_types_without_a_torch_dequantizer_use_gguf_py() -> None:
    import numpy as np
    from gguf.quants import dequantize as reference

    raw = np.random.default_rng(0).integers(0, 256, size=(3, 2 * 18), dtype=np.uint8)
    scale = np.array([0.01], dtype=np.float16).view(np.uint8)
    raw[:, 0:2] = raw[:, 18:20] = scale  # sane scales for both IQ4_NL blocks
    got = dequantize(torch.from_numpy(raw), T.IQ4_NL)
    assert torch.equal(got, torch.from_numpy(reference(raw, T.IQ4_NL).astype(np.float32)).reshape(3, 64))
