"""Triton norms, rotary, gated activations and KV-cache stores against their torch references."""

from __future__ import annotations

import pytest
import torch
from kernel_testlib import tolerance

from maxcli.ops import torch_ref

pytest.importorskip("triton")
from maxcli.kernels import activations, kv_cache, norms, rotary  # noqa: E402  (after the skip)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got.float(), want.float(), **tolerance(want.dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("features", [40, 64, 1000])
def test_rms_norm(dtype, features, device):
    x = torch.randn(3, 5, features, device=device).to(dtype)
    w = torch.randn(features, device=device).to(dtype)
    _close(norms.rms_norm(x, w, 1e-6), torch_ref.rms_norm(x, w, 1e-6))
    res = torch.randn_like(x)
    got, got_sum = norms.rms_norm(x, w, 1e-5, residual=res, weight_offset=1.0)
    want, want_sum = torch_ref.rms_norm(x, w, 1e-5, residual=res, weight_offset=1.0)
    _close(got_sum, want_sum)
    _close(got, want)


def test_rms_norm_strided_rows_and_bad_input(device):
    x = torch.randn(4, 2, 64, device=device)[:, 1]  # rows 128 elements apart
    w = torch.randn(64, device=device)
    _close(norms.rms_norm(x, w, 1e-6), torch_ref.rms_norm(x, w, 1e-6))
    with pytest.raises(ValueError, match="features but weight"):
        norms.rms_norm(x, w[:10], 1e-6)
    with pytest.raises(ValueError, match="residual dtype"):
        norms.rms_norm(x, w, 1e-6, residual=x.double())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm(dtype, with_bias, device):
    x = (torch.randn(7, 384, device=device) * 3 + 1).to(dtype)
    w, b = torch.randn(384, device=device).to(dtype), torch.randn(384, device=device).to(dtype)
    bias = b if with_bias else None
    _close(norms.layer_norm(x, w, bias, 1e-12), torch_ref.layer_norm(x, w, bias, 1e-12))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("heads, kv_heads, head_dim, rot", [(4, 2, 64, 64), (3, 1, 32, 16), (2, 2, 128, 96)])
def test_rotary_embedding(dtype, is_neox, heads, kv_heads, head_dim, rot, device):
    positions = torch.tensor([0, 5, 31, 2, 17], device=device)
    q = torch.randn(5, heads, head_dim, device=device).to(dtype)
    k = torch.randn(5, kv_heads, head_dim, device=device).to(dtype)
    angles = torch.arange(32, device=device)[:, None] * torch.rand(rot // 2, device=device)
    cache = torch.cat((angles.cos(), angles.sin()), -1)
    got_q, got_k = rotary.rotary_embedding(positions, q, k, cache, is_neox)
    want_q, want_k = torch_ref.rotary_embedding(positions, q, k, cache, is_neox)
    _close(got_q, want_q)
    _close(got_k, want_k)


def test_rotary_embedding_on_strided_qkv_views(device):
    qkv = torch.randn(3, 6 * 32, device=device)
    q, k = qkv[:, : 4 * 32].view(3, 4, 32), qkv[:, 4 * 32 : 5 * 32].view(3, 1, 32)
    cache = torch.randn(8, 32, device=device)
    positions = torch.tensor([7, 0, 3], device=device)
    for got, want in zip(rotary.rotary_embedding(positions, q, k, cache, True),
                         torch_ref.rotary_embedding(positions, q, k, cache, True)):
        _close(got, want)
    with pytest.raises(ValueError, match="even R <= head_dim"):
        rotary.rotary_embedding(positions, q, k, torch.randn(8, 33, device=device), True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["silu_and_mul", "gelu_tanh_and_mul"])
@pytest.mark.parametrize("shape", [(3, 2 * 50), (2, 2, 2 * 1536), (1, 2)])
def test_gated_activations(dtype, op, shape, device):
    x = (torch.randn(shape, device=device) * 4).to(dtype)
    _close(getattr(activations, op)(x), getattr(torch_ref, op)(x))


def test_gated_activation_rejects_odd_width(device):
    with pytest.raises(ValueError, match="even last dim"):
        activations.silu_and_mul(torch.randn(2, 7, device=device))


@pytest.mark.parametrize("cache_dtype, key_dtype", [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16),
                                                    (torch.float16, torch.float16), (torch.bfloat16, torch.float32)])
def test_store_kvcache(cache_dtype, key_dtype, device):
    # Caches as the K and V halves of one [blocks, 2, page, Hk, D] tensor; slots cross page boundaries.
    kv = torch.zeros(5, 2, 4, 3, 16, device=device, dtype=cache_dtype)
    ref = kv.clone()
    key = torch.randn(7, 3, 16, device=device).to(key_dtype)
    value = torch.randn(7, 3, 16, device=device).to(key_dtype)
    slots = torch.tensor([3, 4, -1, 19, 0, -1, 8], device=device)
    kv_cache.store_kvcache(key, value, kv[:, 0], kv[:, 1], slots)
    torch_ref.store_kvcache(key, value, ref[:, 0], ref[:, 1], slots)
    if cache_dtype == key_dtype:
        assert torch.equal(kv, ref)
    else:
        torch.testing.assert_close(kv.float(), ref.float(), **tolerance(cache_dtype))
    assert int((kv[:, 0].abs().sum((-1, -2)) > 0).sum()) == 5  # slot -1 wrote nothing


def test_store_kvcache_rejects_mismatched_heads(device):
    with pytest.raises(ValueError, match="do not fit cache"):
        kv_cache.store_kvcache(torch.randn(2, 2, 16, device=device), torch.randn(2, 2, 16, device=device),
                               torch.zeros(2, 4, 3, 16, device=device), torch.zeros(2, 4, 3, 16, device=device),
                               torch.tensor([0, 1], device=device))
