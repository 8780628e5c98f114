"""Time each Triton kernel against its torch counterpart on a CUDA GPU and print a table with ratios.

    python benchmarks/kernels.py [--dtype bfloat16] [--iters 50]

Counterparts: SDPA on dense, contiguous K/V for attention (the best torch can do without paging),
dequantize-then-matmul for GGUF weights, the torch references for everything else. Times are medians
of CUDA-event measurements after warm-up. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Callable

import torch
import torch.nn.functional as F


def cuda_time_ms(fn: Callable[[], object], iters: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def paged_case(batch: int, q_len: int, kv_len: int, heads: int, kv_heads: int, head_dim: int, dtype, page=16):
    """Paged inputs plus the same K/V laid out densely [B, Hk, kv_len, D] for SDPA."""
    dev = "cuda"
    pages_per_seq = -(-kv_len // page)
    num_blocks = batch * pages_per_seq
    k_cache = torch.randn(num_blocks, page, kv_heads, head_dim, device=dev, dtype=dtype)
    v_cache = torch.randn_like(k_cache)
    tables = torch.randperm(num_blocks, device=dev, dtype=torch.int32).view(batch, pages_per_seq)
    q = torch.randn(batch * q_len, heads, head_dim, device=dev, dtype=dtype)
    cu = torch.arange(0, batch * q_len + 1, q_len, device=dev, dtype=torch.int32)
    seq_k = torch.full((batch,), kv_len, device=dev, dtype=torch.int32)
    k_dense = k_cache[tables.long()].reshape(batch, -1, kv_heads, head_dim)[:, :kv_len].transpose(1, 2).contiguous()
    v_dense = v_cache[tables.long()].reshape(batch, -1, kv_heads, head_dim)[:, :kv_len].transpose(1, 2).contiguous()
    q_dense = q.view(batch, q_len, heads, head_dim).transpose(1, 2).contiguous()
    args = (q, k_cache, v_cache, tables, cu, seq_k, q_len, kv_len, head_dim**-0.5)
    return args, (q_dense, k_dense, v_dense)


def sdpa(q, k, v, q_len: int, kv_len: int):
    # Causal with a cached prefix: query i sees keys <= kv_len - q_len + i.
    mask = None
    if q_len > 1:
        mask = torch.ones(q_len, kv_len, device=q.device, dtype=torch.bool).tril(kv_len - q_len)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)


def build_rows(dtype: torch.dtype, iters: int) -> list[tuple[str, float, float]]:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    from maxcli.kernels import activations, kv_cache, norms, paged_attention, quant_matmul, rotary
    from maxcli.ops import quant_matmul as quant_ref
    from maxcli.ops import torch_ref

    rows: list[tuple[str, float, float]] = []

    def add(name: str, kernel: Callable[[], object], baseline: Callable[[], object]) -> None:
        rows.append((name, cuda_time_ms(kernel, iters), cuda_time_ms(baseline, iters)))

    for batch, q_len, kv_len, heads, kv_heads, d in [
        (32, 1, 1024, 32, 8, 128), (4, 1, 16384, 32, 8, 128), (1, 1, 32768, 16, 2, 256),
        (4, 512, 512, 32, 8, 128), (1, 256, 4096, 32, 8, 128),
    ]:
        args, (qd, kd, vd) = paged_case(batch, q_len, kv_len, heads, kv_heads, d, dtype)
        name = f"paged_attention B={batch} q={q_len} kv={kv_len} H={heads}/{kv_heads} D={d}"
        add(name, lambda: paged_attention.paged_attention(*args), lambda: sdpa(qd, kd, vd, q_len, kv_len))

    tokens, hidden = 4096, 4096
    x = torch.randn(tokens, hidden, device="cuda", dtype=dtype)
    res, w = torch.randn_like(x), torch.randn(hidden, device="cuda", dtype=dtype)
    add(f"rms_norm+residual [{tokens}, {hidden}]", lambda: norms.rms_norm(x, w, 1e-6, res),
        lambda: torch_ref.rms_norm(x, w, 1e-6, res))
    add(f"layer_norm [{tokens}, {hidden}]", lambda: norms.layer_norm(x, w, w, 1e-5),
        lambda: torch_ref.layer_norm(x, w, w, 1e-5))
    gated = torch.randn(tokens, 2 * 14336, device="cuda", dtype=dtype)
    add("silu_and_mul [4096, 2x14336]", lambda: activations.silu_and_mul(gated),
        lambda: torch_ref.silu_and_mul(gated))
    add("gelu_tanh_and_mul [4096, 2x14336]", lambda: activations.gelu_tanh_and_mul(gated),
        lambda: torch_ref.gelu_tanh_and_mul(gated))
    q = torch.randn(tokens, 32, 128, device="cuda", dtype=dtype)
    k = torch.randn(tokens, 8, 128, device="cuda", dtype=dtype)
    pos = torch.randint(0, 8192, (tokens,), device="cuda")
    cache = torch.randn(8192, 128, device="cuda", dtype=torch.float32)
    add("rotary_embedding neox [4096, 32/8, 128]", lambda: rotary.rotary_embedding(pos, q, k, cache, True),
        lambda: torch_ref.rotary_embedding(pos, q, k, cache, True))
    k_cache = torch.zeros(4096, 16, 8, 128, device="cuda", dtype=dtype)
    v_cache = torch.zeros_like(k_cache)
    slots = torch.randperm(4096 * 16, device="cuda")[:tokens]
    add("store_kvcache [4096, 8, 128]", lambda: kv_cache.store_kvcache(k, k, k_cache, v_cache, slots),
        lambda: torch_ref.store_kvcache(k, k, k_cache, v_cache, slots))

    n, kdim = 4096, 4096
    for qtype in (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0,
                  GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K):
        raw = _gguf_weight(qtype, n, kdim, quantize)
        for m in (1, 4, 512):
            xm = torch.randn(m, kdim, device="cuda", dtype=dtype)
            add(f"gguf_matmul {qtype.name} [{m}x{kdim}] @ [{n}x{kdim}].T",
                lambda: quant_matmul.gguf_matmul(xm, raw, qtype, n, kdim),
                lambda: quant_ref.gguf_matmul(xm, raw, qtype, n, kdim))
    return rows


def _gguf_weight(qtype, n: int, k: int, quantize) -> torch.Tensor:
    """uint8 [n, bytes_per_row] on the GPU: gguf-py's quantization of random floats, or for the K-quants
    (which gguf-py cannot quantize) random quant bytes with finite fp16 scales."""
    import numpy as np
    from gguf import GGML_QUANT_SIZES

    rng = np.random.default_rng(0)
    try:
        raw = quantize(rng.standard_normal((n, k)).astype(np.float32), qtype)
    except NotImplementedError:
        block_elems, block_bytes = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, (n, k // block_elems, block_bytes), dtype=np.uint8)
        scale_bytes = np.full(raw.shape[:2], 0.01, dtype=np.float16)[..., None].view(np.uint8)
        for offset in (208,) if qtype.name == "Q6_K" else (0, 2):  # d (and dmin) of each super-block
            raw[:, :, offset:offset + 2] = scale_bytes
        raw = raw.reshape(n, -1)
    return torch.from_numpy(raw).cuda()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--iters", type=int, default=50)
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("benchmarks/kernels.py needs a CUDA GPU; none found, nothing to time.")
        return 0
    rows = build_rows(getattr(torch, opts.dtype), opts.iters)
    width = max(len(r[0]) for r in rows)
    print(f"{torch.cuda.get_device_name()}  dtype={opts.dtype}  median of {opts.iters} runs")
    print(f"{'op':<{width}}  {'triton ms':>10}  {'torch ms':>10}  {'speedup':>8}")
    for name, kernel_ms, torch_ms in rows:
        print(f"{name:<{width}}  {kernel_ms:>10.4f}  {torch_ms:>10.4f}  {torch_ms / kernel_ms:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
