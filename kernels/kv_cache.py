"""store_kvcache: scatter new keys/values into the paged caches; contract of `torch_ref.store_kvcache`.

Grid (T,): one program copies token t's [Hk, D] key and value tiles to slot slot_mapping[t]
(page slot // block_size, row slot % block_size). Slot -1 (a token whose K/V is already cached, or
padding) is masked out. Caches may be strided views of a larger tensor; writes cast to the cache dtype.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from maxcli.kernels.common import check_float, next_pow2


@triton.jit
def _store_kvcache_kernel(
    key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
    s_key_t, s_key_h, s_key_d, s_val_t, s_val_h, s_val_d,
    sk_b, sk_s, sk_h, sk_d, sv_b, sv_s, sv_h, sv_d,
    page_size, num_heads, head_dim,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot < 0:
        return
    page = slot // page_size
    row = slot % page_size
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_h[:, None] < num_heads) & (offs_d[None, :] < head_dim)
    k = tl.load(key_ptr + t * s_key_t + offs_h[:, None] * s_key_h + offs_d[None, :] * s_key_d, mask=mask)
    v = tl.load(value_ptr + t * s_val_t + offs_h[:, None] * s_val_h + offs_d[None, :] * s_val_d, mask=mask)
    k_dst = k_cache_ptr + page * sk_b + row * sk_s + offs_h[:, None] * sk_h + offs_d[None, :] * sk_d
    v_dst = v_cache_ptr + page * sv_b + row * sv_s + offs_h[:, None] * sv_h + offs_d[None, :] * sv_d
    tl.store(k_dst, k.to(k_cache_ptr.dtype.element_ty), mask=mask)
    tl.store(v_dst, v.to(v_cache_ptr.dtype.element_ty), mask=mask)


def store_kvcache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    if key.dim() != 3 or value.shape != key.shape or k_cache.dim() != 4 or v_cache.shape != k_cache.shape:
        raise ValueError(
            f"store_kvcache wants key/value [T, Hk, D] and caches [num_blocks, block_size, Hk, D]; got key "
            f"{tuple(key.shape)}, value {tuple(value.shape)}, k_cache {tuple(k_cache.shape)}"
        )
    if tuple(key.shape[1:]) != tuple(k_cache.shape[2:]) or slot_mapping.shape != key.shape[:1]:
        raise ValueError(
            f"store_kvcache: key {tuple(key.shape)} / slot_mapping {tuple(slot_mapping.shape)} do not fit "
            f"cache {tuple(k_cache.shape)}"
        )
    if slot_mapping.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"slot_mapping must be int32 or int64, got {slot_mapping.dtype}")
    for name, t in (("key", key), ("value", value), ("k_cache", k_cache), ("v_cache", v_cache)):
        check_float(name, t)
    T, Hk, D = key.shape
    if T == 0:
        return
    _store_kvcache_kernel[(T,)](
        key, value, k_cache, v_cache, slot_mapping,
        *key.stride(), *value.stride(), *k_cache.stride(), *v_cache.stride(),
        k_cache.shape[1], Hk, D,
        BLOCK_H=next_pow2(Hk), BLOCK_D=next_pow2(D),
    )
