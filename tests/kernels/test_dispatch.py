"""maxcli.ops dispatch: backend choice (MAXCLI_OPS, force_backend), clear errors, lazy Triton import, and
a two-layer decoder-style sequence of ops giving the same result under the triton and torch backends."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from gguf import GGMLQuantizationType
from kernel_testlib import gguf_rows

from maxcli import ops

pytest.importorskip("triton")


def test_import_does_not_load_triton():
    code = "import sys, maxcli.ops; assert 'triton' not in sys.modules and 'maxcli.kernels' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MAXCLI_OPS": "triton"})


def test_backend_selection(monkeypatch, device):
    x = torch.randn(2, 8, device=device)
    monkeypatch.delenv("MAXCLI_OPS", raising=False)
    assert ops.use_triton(x) == x.is_cuda  # auto: kernels on CUDA only
    monkeypatch.setenv("MAXCLI_OPS", "torch")
    assert not ops.use_triton(x)
    with ops.force_backend("triton"):  # the context manager wins over the variable
        assert ops.use_triton(x)
        with ops.force_backend("torch"):
            assert not ops.use_triton(x)
        assert ops.use_triton(x)
    monkeypatch.setenv("MAXCLI_OPS", "triton")
    assert ops.use_triton(x)
    monkeypatch.setenv("MAXCLI_OPS", "cuda")
    with pytest.raises(ValueError, match="MAXCLI_OPS='cuda' is not one of"):
        ops.silu_and_mul(x)
    with pytest.raises(ValueError, match="unknown ops backend"):
        with ops.force_backend("cuda"):  # type: ignore[arg-type]
            pass


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with ops.force_backend("triton"), pytest.raises(ops.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        ops.rms_norm(torch.randn(2, 8), torch.ones(8), 1e-6)


def test_forced_triton_runs_the_kernels(device):
    x = torch.randn(3, 64, device=device)
    with ops.force_backend("triton"):
        ops.silu_and_mul(x)
    assert "maxcli.kernels.activations" in sys.modules


def test_gguf_matmul_without_a_kernel_falls_back_to_the_reference(device):
    raw = torch.from_numpy(gguf_rows(GGMLQuantizationType.Q2_K, 8, 256)).to(device)
    x = torch.randn(2, 256, device=device)
    with ops.force_backend("triton"):
        got = ops.gguf_matmul(x, raw, "Q2_K", 8, 256)
    torch.testing.assert_close(got, ops.quant_matmul.gguf_matmul(x, raw, "Q2_K", 8, 256))


def _layer_weights(layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int, ffn: int, device):
    q4k, q8 = GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q8_0
    qkv_out = (heads + 2 * kv_heads) * head_dim

    def raw(qtype, n, k, seed):
        return torch.from_numpy(gguf_rows(qtype, n, k, seed=seed)).to(device)

    return [
        dict(
            attn_norm=1.0 + 0.1 * torch.randn(hidden, device=device),
            qkv=(raw(q8, qkv_out, hidden, 10 * i), q8, qkv_out, hidden),
            o=(raw(q4k, hidden, heads * head_dim, 10 * i + 1), q4k, hidden, heads * head_dim),
            ffn_norm=0.1 * torch.randn(hidden, device=device),  # used with weight_offset=1 (Gemma style)
            gate_up=(raw(q8, 2 * ffn, hidden, 10 * i + 2), q8, 2 * ffn, hidden),
            down=(raw(q4k, hidden, ffn, 10 * i + 3), q4k, hidden, ffn),
        )
        for i in range(layers)
    ]


def _forward(h, weights, caches, positions, slots, block_tables, cu_q, seq_k, max_q, max_k, cos_sin, dims):
    """Two decoder layers built only from maxcli.ops; returns the final hidden states."""
    heads, kv_heads, head_dim = dims
    residual = torch.zeros_like(h)
    for layer, (k_cache, v_cache) in zip(weights, caches):
        x, residual = ops.rms_norm(h, layer["attn_norm"], 1e-6, residual=residual)
        qkv = ops.gguf_matmul(x, *layer["qkv"])
        q = qkv[:, : heads * head_dim].view(-1, heads, head_dim)
        k = qkv[:, heads * head_dim : (heads + kv_heads) * head_dim].view(-1, kv_heads, head_dim)
        v = qkv[:, (heads + kv_heads) * head_dim :].view(-1, kv_heads, head_dim)
        q, k = ops.rotary_embedding(positions, q, k, cos_sin, is_neox=True)
        ops.store_kvcache(k, v, k_cache, v_cache, slots)
        attn = ops.paged_attention(q, k_cache, v_cache, block_tables, cu_q, seq_k, max_q, max_k,
                                   head_dim**-0.5, sliding_window=6, softcap=30.0)
        h = ops.gguf_matmul(attn.reshape(attn.shape[0], -1), *layer["o"])
        x, residual = ops.rms_norm(h, layer["ffn_norm"], 1e-6, residual=residual, weight_offset=1.0)
        h = ops.gguf_matmul(ops.silu_and_mul(ops.gguf_matmul(x, *layer["gate_up"])), *layer["down"])
    return ops.layer_norm(h + residual, torch.ones(h.shape[-1], device=h.device), None, 1e-5)


def _prefill_then_decode(backend: str, device) -> list[torch.Tensor]:
    torch.manual_seed(0)
    hidden, heads, kv_heads, head_dim, ffn, page = 256, 4, 2, 64, 256, 4
    dims = (heads, kv_heads, head_dim)
    weights = _layer_weights(2, hidden, heads, kv_heads, head_dim, ffn, device)
    caches = [(torch.zeros(8, page, kv_heads, head_dim, device=device),
               torch.zeros(8, page, kv_heads, head_dim, device=device)) for _ in weights]
    inv_freq = 10000 ** (-torch.arange(0, head_dim, 2, device=device) / head_dim)
    angles = torch.arange(32, device=device)[:, None] * inv_freq
    cos_sin = torch.cat((angles.cos(), angles.sin()), -1)
    block_tables = torch.tensor([[3, 0, 5], [1, 6, 2]], dtype=torch.int32, device=device)
    lens = [7, 3]  # prompts; sequence 0 crosses a page boundary
    outputs = []
    with ops.force_backend(backend):  # type: ignore[arg-type]
        h = 0.5 * torch.randn(sum(lens), hidden, device=device)
        positions = torch.tensor([*range(7), *range(3)], device=device)
        slots = torch.tensor([3 * page + p for p in range(4)] + [0 * page + p for p in range(3)]
                             + [1 * page + p for p in range(3)], device=device)
        cu = torch.tensor([0, 7, 10], dtype=torch.int32, device=device)
        seq_k = torch.tensor(lens, dtype=torch.int32, device=device)
        outputs.append(_forward(h, weights, caches, positions, slots, block_tables, cu, seq_k, 7, 7, cos_sin, dims))
        h = 0.5 * torch.randn(2, hidden, device=device)  # one decode step per sequence
        positions = torch.tensor([7, 3], device=device)
        slots = torch.tensor([0 * page + 3, 1 * page + 3], device=device)
        cu = torch.tensor([0, 1, 2], dtype=torch.int32, device=device)
        seq_k = torch.tensor([8, 4], dtype=torch.int32, device=device)
        outputs.append(_forward(h, weights, caches, positions, slots, block_tables, cu, seq_k, 1, 8, cos_sin, dims))
        outputs.extend(c for pair in caches for c in pair)
    return outputs


def test_two_layer_forward_triton_equals_torch(device):
    got = _prefill_then_decode("triton", device)
    want = _prefill_then_decode("torch", device)
    for g, w in zip(got, want):  # outputs, then each layer's K and V caches
        # float32 summation-order noise only, relative to each tensor's scale (caches reach ~60).
        torch.testing.assert_close(g, w, atol=1e-5 * float(w.abs().max()), rtol=1e-4)
    assert got[0].abs().max() > 0.1  # a real signal went through every layer
