"""Fused single-sequence decode step for Llama-family models on the packed CPU path (csrc/decode_step.cpp).

`install(model)` gives an eligible LlamaForCausalLM-like module a `model.decode_one` hook: a step with one
sequence and one new token then runs every layer in one C++ call (the matmuls stay torch's int4 kernel;
norms, rope, the KV write, attention over the pages and the SiLU gate are plain loops), instead of ~45
eager ops per layer. Same arithmetic as the Python path up to summation order.

The extension is compiled once per (source, torch, CPU flags) with the system C++ compiler into
$MAXCLI_CACHE/cpu-ext (default ~/.cache/maxcli/cpu-ext), ~20 s, then loaded in ~10 ms. Without a compiler,
or with MAXCLI_CPU_DECODE=0, or for a model outside the contract, nothing is installed and the Python path
runs: the hook is an optimisation, never a requirement.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

import torch

from maxcli.nn.attention_metadata import get_attention_metadata

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "decode_step.cpp"
CXXFLAGS = ["-O3", "-march=native", "-std=c++17", "-shared", "-fPIC"]
_loaded: bool | None = None


def _cache_dir() -> Path:
    base = os.environ.get("MAXCLI_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "maxcli")
    return Path(base) / "cpu-ext"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor()


def _library_path() -> Path:
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(CXXFLAGS).encode() + torch.__version__.encode() + _cpu_flags().encode()
        + platform.machine().encode()
    ).hexdigest()[:16]
    return _cache_dir() / f"maxcli_cpu_{key}.so"


def _compile(target: Path) -> None:
    from torch.utils.cpp_extension import include_paths, library_paths

    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        raise RuntimeError("no C++ compiler (c++ / g++) on PATH")
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    libs = library_paths()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        cmd = [cxx, *CXXFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(SOURCE), "-o", str(out), f"-I{sysconfig.get_paths()['include']}"]
        cmd += [f"-I{p}" for p in include_paths()] + [f"-L{p}" for p in libs] + [f"-Wl,-rpath,{p}" for p in libs]
        cmd += ["-lc10", "-ltorch_cpu", "-ltorch"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {SOURCE.name} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        os.replace(out, target)  # atomic: concurrent loaders see the whole library or none


def load() -> bool:
    """Load (compiling once if needed) the extension; False, with one warning, when it cannot be had."""
    global _loaded
    if _loaded is None:
        _loaded = False
        if os.environ.get("MAXCLI_CPU_DECODE", "1") == "0":
            return False
        try:
            path = _library_path()
            if not path.is_file():
                logger.warning("compiling the fused CPU decode step (once; cached in %s)", path.parent)
                _compile(path)
            torch.ops.load_library(str(path))
            _loaded = True
        except Exception as exc:  # no compiler, no headers, a failed build: the Python path still runs
            logger.warning("fused CPU decode step unavailable, using the Python path: %s", exc)
    return _loaded


def _eligible(module: Any) -> str | None:
    """Why `module` is outside the fused step's contract, or None when it is inside."""
    from maxcli.architectures.llama3.model import LlamaAttention, LlamaDecoderLayer, LlamaMLP, LlamaModel
    from maxcli.nn.quantized import QuantizedLinear

    inner = getattr(module, "model", None)
    if not isinstance(inner, LlamaModel) or type(inner).forward is not LlamaModel.forward:
        return "not a Llama-family model"
    if type(inner).embed is not LlamaModel.embed or inner.norm.weight_offset or len(inner.rotary_embs) != 1:
        return "embedding scale, norm offset or per-layer rope"
    rope = next(iter(inner.rotary_embs.values()))
    for layer in inner.layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if type(layer).forward is not LlamaDecoderLayer.forward or not isinstance(mlp, LlamaMLP):
            return "custom decoder layer"
        if type(attn).forward is not LlamaAttention.forward or attn.q_norm is not None:
            return "custom attention"
        if attn.attn.sliding_window or attn.attn.softcap or type(mlp).forward is not LlamaMLP.forward:
            return "sliding window, soft-capping or custom MLP"
        norms_offset = layer.input_layernorm.weight_offset or layer.post_attention_layernorm.weight_offset
        if getattr(mlp.act_and_mul, "__name__", "") != "silu_and_mul" or norms_offset:
            return "activation or norm offset"
        for proj in (attn.qkv_proj, attn.o_proj, mlp.gate_up_proj, mlp.down_proj):
            if not isinstance(proj, QuantizedLinear) or not proj.int4 or proj.bias is not None:
                return "a projection that is not bias-free int4"
    if not rope.is_neox or rope.long_after is not None or rope.cos_sin_cache.shape[1] != attn.head_dim:
        return "rope layout"
    return None


def install(module: Any) -> bool:
    """Give an eligible module's inner model a fused `decode_one`; True when installed."""
    reason = _eligible(module)
    if reason is not None:
        logger.info("fused CPU decode step not used: %s", reason)
        return False
    if not load():
        return False
    module.model.decode_one = FusedDecodeStep(module.model)
    return True


class FusedDecodeStep:
    """Callable(input_ids [1], positions [1]) -> final hidden [1, hidden], or None to use the Python path
    (more than one sequence or token, a skipped KV slot, a cache that is not contiguous float32)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        layers = model.layers
        attn0 = layers[0].self_attn
        self.num_heads, self.num_kv_heads, self.head_dim = attn0.num_heads, attn0.num_kv_heads, attn0.head_dim
        self.scale, self.eps = float(attn0.attn.scale), float(model.norm.eps)
        self.rope = next(iter(model.rotary_embs.values()))
        self.input_norms = [l.input_layernorm.weight.float().contiguous() for l in layers]
        self.post_norms = [l.post_attention_layernorm.weight.float().contiguous() for l in layers]
        projections = {
            "qkv": [l.self_attn.qkv_proj for l in layers],
            "o": [l.self_attn.o_proj for l in layers],
            "gate_up": [l.mlp.gate_up_proj for l in layers],
            "down": [l.mlp.down_proj for l in layers],
        }
        self.weights = {k: ([p.codes for p in v], [p.scales for p in v]) for k, v in projections.items()}
        self.final_norm = model.norm.weight.float().contiguous()
        self._bound: torch.Tensor | None = None  # layer 0's K cache when the lists below were taken
        self._k_caches: list[torch.Tensor] = []
        self._v_caches: list[torch.Tensor] = []
        self._caches_ok = False

    def _caches(self) -> bool:
        """Refresh the per-layer cache lists after a (re)bind; whether they fit the op (float32, contiguous)."""
        layers = self.model.layers
        if layers[0].self_attn.attn.k_cache is not self._bound:
            self._k_caches = [l.self_attn.attn.k_cache for l in layers]
            self._v_caches = [l.self_attn.attn.v_cache for l in layers]
            self._bound = self._k_caches[0]
            self._caches_ok = all(
                c is not None and c.dtype == torch.float32 and c.is_contiguous() for c in self._k_caches + self._v_caches
            )
        return self._caches_ok

    def __call__(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor | None:
        meta = get_attention_metadata()
        if input_ids.shape[0] != 1 or meta.block_tables.shape[0] != 1 or input_ids.device.type != "cpu":
            return None
        slot = int(meta.slot_mapping[0])
        if slot < 0 or not self._caches():
            return None
        h = self.model.embed(input_ids).float().contiguous()
        cos_sin = self.rope.cos_sin_cache[int(positions[0])].float().contiguous()
        block_table = meta.block_tables[0].to(torch.int32).contiguous()
        return torch.ops.maxcli_cpu.decode_step(
            h, self.input_norms, self.post_norms,
            *self.weights["qkv"], *self.weights["o"], *self.weights["gate_up"], *self.weights["down"],
            self._k_caches, self._v_caches,
            self.final_norm, cos_sin, block_table,
            int(meta.max_seqlen_k), slot, self.num_heads, self.num_kv_heads, self.head_dim, self.scale, self.eps,
        )
