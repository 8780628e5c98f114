"""The torch references (the CPU path and the kernels' contract) against independent implementations:
a per-sequence dense attention loop, HF transformers' layers, and gguf-py's dequantizer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize
from kernel_testlib import FP16_FIELDS, dense_attention, gguf_rows, paged_batch
from transformers.activations import ACT2FN
from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_rotary
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import LlamaRMSNorm
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rotary

from maxcli.ops import quant_matmul, torch_ref

ATTENTION_CASES = [
    # q_lens, k_lens, H, Hk, D, page, window, softcap
    ([5, 1, 9], [5, 12, 9], 4, 4, 16, 4, None, None),  # prefill, decode with prefix, page boundaries
    ([3, 7], [20, 7], 6, 2, 32, 8, None, None),  # chunked prefill over a cached prefix, GQA 3
    ([1, 1, 1], [1, 17, 33], 8, 1, 16, 16, 5, None),  # decode, GQA 8, window
    ([6, 2], [6, 30], 2, 1, 64, 16, 4, 3.0),  # window + soft-capping
    ([1], [23], 6, 2, 16, 4, 7, None),  # single-sequence decode (its own path), window, GQA 3
    ([1], [9], 4, 4, 16, 4, None, None),  # single-sequence decode, last page partly filled
    ([1, 1], [40, 3], 4, 2, 16, 8, None, None),  # batched decode (its own path), uneven lengths
]


@pytest.mark.parametrize("case", ATTENTION_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_paged_attention_reference_matches_dense_loop(case, dtype):
    q_lens, k_lens, h, hk, d, page, window, cap = case
    batch = paged_batch(q_lens, k_lens, h, hk, d, page, dtype=dtype, strided_cache=True)
    got = torch_ref.paged_attention(*batch.args(), window, cap)
    want = dense_attention(batch, window, cap)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)
    assert got.dtype == dtype


def test_store_kvcache_reference_writes_each_slot_and_skips_minus_one():
    k_cache, v_cache = torch.zeros(3, 4, 2, 8), torch.zeros(3, 4, 2, 8)
    key, value = torch.randn(5, 2, 8), torch.randn(5, 2, 8)
    slots = torch.tensor([0, 7, -1, 11, 4])
    torch_ref.store_kvcache(key, value, k_cache, v_cache, slots)
    for t, slot in enumerate(slots.tolist()):
        if slot >= 0:
            assert torch.equal(k_cache[slot // 4, slot % 4], key[t])
            assert torch.equal(v_cache[slot // 4, slot % 4], value[t])
    assert int((k_cache.abs().sum((-1, -2)) > 0).sum()) == 4  # nothing written for slot -1


def _hf_cos_sin(positions: torch.Tensor, rot: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    table = create_sinusoidal_positions(64, rot)  # [pos, rot]: sin then cos halves (GPT-J's layout)
    sin, cos = table[:, : rot // 2], table[:, rot // 2 :]
    return torch.cat((cos, sin), -1), cos[positions], sin[positions]


@pytest.mark.parametrize("rot", [32, 16])
def test_rotary_reference_neox_matches_llama(rot):
    positions = torch.tensor([0, 3, 17, 63])
    q, k = torch.randn(4, 3, 32), torch.randn(4, 1, 32)
    cache, cos, sin = _hf_cos_sin(positions, rot)
    got_q, got_k = torch_ref.rotary_embedding(positions, q, k, cache, is_neox=True)
    cos2, sin2 = torch.cat((cos, cos), -1)[None], torch.cat((sin, sin), -1)[None]
    want_q, want_k = llama_rotary(q[None, ..., :rot].transpose(1, 2), k[None, ..., :rot].transpose(1, 2), cos2, sin2)
    torch.testing.assert_close(got_q[..., :rot], want_q[0].transpose(0, 1))
    torch.testing.assert_close(got_k[..., :rot], want_k[0].transpose(0, 1))
    assert torch.equal(got_q[..., rot:], q[..., rot:])  # partial rotary leaves the tail alone


@pytest.mark.parametrize("rot", [32, 16])
def test_rotary_reference_normal_matches_gptj(rot):
    positions = torch.tensor([1, 2, 40])
    q, k = torch.randn(3, 2, 32), torch.randn(3, 2, 32)
    cache, cos, sin = _hf_cos_sin(positions, rot)
    got_q, _ = torch_ref.rotary_embedding(positions, q, k, cache, is_neox=False)
    want = gptj_rotary(q[None, ..., :rot], sin[None], cos[None])[0]
    torch.testing.assert_close(got_q[..., :rot], want)
    assert torch.equal(got_q[..., rot:], q[..., rot:])


def test_rms_norm_reference_matches_llama_and_gemma():
    x, res = torch.randn(5, 48), torch.randn(5, 48)
    llama = LlamaRMSNorm(48, eps=1e-6)
    gemma = GemmaRMSNorm(48, eps=1e-6)
    with torch.no_grad():
        llama.weight.normal_()
        gemma.weight.normal_()
    torch.testing.assert_close(torch_ref.rms_norm(x, llama.weight, 1e-6), llama(x))
    normed, summed = torch_ref.rms_norm(x, gemma.weight, 1e-6, residual=res, weight_offset=1.0)
    torch.testing.assert_close(summed, x + res)
    torch.testing.assert_close(normed, gemma(x + res))


def test_activation_and_layer_norm_references_match_hf_and_torch():
    x = torch.randn(3, 2 * 40)
    torch.testing.assert_close(torch_ref.silu_and_mul(x), ACT2FN["silu"](x[:, :40]) * x[:, 40:])
    torch.testing.assert_close(torch_ref.gelu_tanh_and_mul(x), ACT2FN["gelu_pytorch_tanh"](x[:, :40]) * x[:, 40:])
    ln = torch.nn.LayerNorm(80, eps=1e-5)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    torch.testing.assert_close(torch_ref.layer_norm(x, ln.weight, ln.bias, 1e-5), ln(x))


@pytest.mark.parametrize("qtype", sorted(FP16_FIELDS, key=int), ids=lambda q: q.name)
def test_gguf_matmul_reference_is_gguf_dequantize_then_matmul(qtype):
    raw = gguf_rows(qtype, 6, 512, seed=int(qtype))
    w = torch.from_numpy(np.ascontiguousarray(dequantize(raw, qtype), dtype=np.float32))
    x = torch.randn(3, 512)
    got = quant_matmul.gguf_matmul(x, torch.from_numpy(raw), qtype, 6, 512)
    torch.testing.assert_close(got, x @ w.T, atol=1e-5, rtol=1e-5)


def test_gguf_matmul_reference_rejects_bad_input():
    raw = torch.from_numpy(gguf_rows(GGMLQuantizationType.Q4_0, 4, 64))
    with pytest.raises(ValueError, match="unknown GGUF quantization type"):
        quant_matmul.gguf_matmul(torch.randn(1, 64), raw, "Q9_9", 4, 64)
    with pytest.raises(ValueError, match="needs raw uint8"):
        quant_matmul.gguf_matmul(torch.randn(1, 64), raw, "q4_0", 5, 64)
    with pytest.raises(ValueError, match="divisible by 32"):
        quant_matmul.gguf_matmul(torch.randn(1, 60), raw, "Q4_0", 4, 60)
    with pytest.raises(ValueError, match="expected in_features=64"):
        quant_matmul.gguf_matmul(torch.randn(1, 32), raw, 2, 4, 64)
