"""One function per op. Models call these and never know which implementation ran.

Dispatch per call: the Triton kernel (maxcli.kernels) when the tensors are on CUDA and Triton imports,
the torch reference (maxcli.ops.torch_ref, maxcli.ops.quant_matmul) otherwise. `MAXCLI_OPS=torch|triton`
or `force_backend(...)` (which wins over the variable; a context variable, so it covers the calling
thread or task only) picks one; triton on CPU tensors is an error
unless TRITON_INTERPRET=1, which runs kernels through Triton's interpreter (tests). gguf_matmul falls
back to the reference for GGUF types that have no kernel.

Triton and the kernels are imported on the first Triton call only: `import maxcli.ops` stays cheap.
Cost per call: one environment lookup and a device check.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import importlib.util
import os
from types import ModuleType
from typing import Iterator, Literal

import torch
from gguf import GGMLQuantizationType

from maxcli.ops import quant_matmul, torch_ref
from maxcli.ops.quant_matmul import parse_qtype

Backend = Literal["torch", "triton"]
_BACKENDS = ("torch", "triton")
_forced: contextvars.ContextVar[Backend | None] = contextvars.ContextVar("maxcli_ops_backend", default=None)
_kernel_modules: dict[str, ModuleType] = {}
_triton_available: bool | None = None


class BackendUnavailableError(ValueError):
    """The requested op backend cannot run these tensors (e.g. MAXCLI_OPS=triton on CPU)."""


@contextlib.contextmanager
def force_backend(name: Backend) -> Iterator[None]:
    """Run every op inside the block on `name` ("triton" or "torch"), whatever MAXCLI_OPS says."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown ops backend {name!r}: expected 'torch' or 'triton'")
    token = _forced.set(name)
    try:
        yield
    finally:
        _forced.reset(token)


def _triton_importable() -> bool:
    global _triton_available
    if _triton_available is None:
        _triton_available = importlib.util.find_spec("triton") is not None
    return _triton_available


def _requested() -> Backend | None:
    forced = _forced.get()
    if forced is not None:
        return forced
    env = os.environ.get("MAXCLI_OPS", "").strip().lower()
    if env in ("", "auto"):
        return None
    if env not in _BACKENDS:
        raise ValueError(f"MAXCLI_OPS={env!r} is not one of: torch, triton, auto")
    return env  # type: ignore[return-value]


def use_triton(t: torch.Tensor) -> bool:
    """Whether an op on tensor `t` runs its Triton kernel under the current backend choice."""
    requested = _requested()
    if requested == "torch":
        return False
    if requested is None:
        return t.is_cuda and _triton_importable()
    if not _triton_importable():
        raise BackendUnavailableError("the triton ops backend was requested but triton is not installed")
    if not t.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise BackendUnavailableError(
            f"the triton ops backend needs CUDA tensors (got {t.device}); set TRITON_INTERPRET=1 to interpret on CPU"
        )
    return True


def _kernels(name: str) -> ModuleType:
    module = _kernel_modules.get(name)
    if module is None:
        module = _kernel_modules[name] = importlib.import_module(f"maxcli.kernels.{name}")
    return module


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    residual: torch.Tensor | None = None,
    weight_offset: float = 0.0,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    impl = _kernels("norms").rms_norm if use_triton(x) else torch_ref.rms_norm
    return impl(x, weight, eps, residual, weight_offset)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, eps: float) -> torch.Tensor:
    impl = _kernels("norms").layer_norm if use_triton(x) else torch_ref.layer_norm
    return impl(x, weight, bias, eps)


def rotary_embedding(
    positions: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    cos_sin_cache: torch.Tensor,
    is_neox: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    impl = _kernels("rotary").rotary_embedding if use_triton(q) else torch_ref.rotary_embedding
    return impl(positions, q, k, cos_sin_cache, is_neox)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    return _kernels("activations").silu_and_mul(x) if use_triton(x) else torch_ref.silu_and_mul(x)


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    return _kernels("activations").gelu_tanh_and_mul(x) if use_triton(x) else torch_ref.gelu_tanh_and_mul(x)


def store_kvcache(
    key: torch.Tensor,
    value: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
) -> None:
    if slot_mapping.numel() == 0:  # a step over no tokens (an empty batch): no kernel launch
        return
    impl = _kernels("kv_cache").store_kvcache if use_triton(k_cache) else torch_ref.store_kvcache
    impl(key, value, k_cache, v_cache, slot_mapping)


def paged_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    seq_lens_k: torch.Tensor,
    max_seqlen_q: int,
    max_seqlen_k: int,
    scale: float,
    sliding_window: int | None = None,
    softcap: float | None = None,
) -> torch.Tensor:
    if q.shape[0] == 0:  # a step over no tokens (an empty batch): no kernel launch
        return q.new_zeros(q.shape)
    impl = _kernels("paged_attention").paged_attention if use_triton(q) else torch_ref.paged_attention
    return impl(
        q, k_cache, v_cache, block_tables, cu_seqlens_q, seq_lens_k, max_seqlen_q, max_seqlen_k, scale,
        sliding_window, softcap,
    )


def _cpu_kernel(x: torch.Tensor, qtypes: list[GGMLQuantizationType]) -> bool:
    """The C++ block kernels run CPU tensors of the types they cover, unless MAXCLI_OPS=torch."""
    if x.device.type != "cpu" or _requested() == "torch":
        return False
    from maxcli.ops import gguf_cpu

    return all(q in gguf_cpu.KERNEL_QTYPES for q in qtypes) and gguf_cpu.available()


def gguf_linear(
    x: torch.Tensor,
    raws: list[torch.Tensor],
    qtypes: list[GGMLQuantizationType | int | str],
    rows: list[int],
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """y [..., sum(rows)] float32 = x [..., K] @ [W_0; W_1; ...].T (+ bias): a fused projection whose parts
    (q, k, v or gate, up) are raw GGUF blocks of their own types, uint8 [rows_i, bytes_per_row_i].

    CPU: the C++ block kernels (int8-quantized activations, maxcli.ops.gguf_cpu). Elsewhere, or for types
    without a kernel: gguf_matmul per part."""
    qts = [parse_qtype(q) for q in qtypes]
    if _cpu_kernel(x, qts):
        from maxcli.ops import gguf_cpu

        return gguf_cpu.linear(x, raws, qts, rows, bias)
    k = x.shape[-1]
    parts = [gguf_matmul(x.float(), raw, qt, n, k) for raw, qt, n in zip(raws, qts, rows)]
    y = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    return y if bias is None else y + bias


def apply_token_bitmask_(logits: torch.Tensor, words: torch.Tensor) -> None:
    """In place: logits [R, V] float32 at -inf for every token whose bit (token 32w + j is bit j of
    words[r, w], int32 [R, W]) is clear. CPU: maxcli's C++ kernel when the extension is already loaded
    (never compiled here, in the middle of a step); otherwise the torch reference."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and _cpu_ext_loaded():
        target = logits if logits.is_contiguous() else logits.contiguous()
        torch.ops.maxcli_cpu.apply_token_bitmask_(target, words.to(torch.int32).contiguous())
        if target is not logits:
            logits.copy_(target)
        return
    torch_ref.apply_token_bitmask_(logits, words)


def _cpu_ext_loaded() -> bool:
    from maxcli.ops import cpu_ext

    return cpu_ext.is_loaded()


def gguf_dequantize(raw: torch.Tensor, qtype: GGMLQuantizationType | int | str, in_features: int) -> torch.Tensor:
    """float32 [rows, in_features] from raw GGUF rows uint8 [rows, bytes_per_row] (exact)."""
    qt = parse_qtype(qtype)
    if _cpu_kernel(raw, [qt]):
        from maxcli.ops import gguf_cpu

        return gguf_cpu.dequantize(raw.contiguous(), qt, in_features)
    return quant_matmul.dequantize_rows(raw, qt).reshape(raw.shape[0], in_features)


def gguf_matmul(
    x: torch.Tensor,
    raw: torch.Tensor,
    qtype: GGMLQuantizationType | int | str,
    out_features: int,
    in_features: int,
) -> torch.Tensor:
    """y = x @ W.T with W [out_features, in_features] as raw GGUF blocks (uint8 [out, bytes_per_row]);
    exact float32 math (dequantized tiles) on every backend."""
    qt = parse_qtype(qtype)
    if use_triton(x):
        kernel = _kernels("quant_matmul")
        if qt in kernel.KERNEL_QTYPES:
            return kernel.gguf_matmul(x, raw, qt, out_features, in_features)
    return quant_matmul.gguf_matmul(x, raw, qt, out_features, in_features)


__all__ = [
    "BackendUnavailableError",
    "force_backend",
    "gelu_tanh_and_mul",
    "gguf_dequantize",
    "gguf_linear",
    "gguf_matmul",
    "layer_norm",
    "paged_attention",
    "quant_matmul",
    "rms_norm",
    "rotary_embedding",
    "silu_and_mul",
    "store_kvcache",
    "torch_ref",
    "use_triton",
]
