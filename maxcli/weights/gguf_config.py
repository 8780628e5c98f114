"""GGUF metadata -> the fields of a HF config.json, for the architectures maxcli runs from GGUF.

Key names follow llama.cpp's `{arch}.*` convention (gguf.constants.Keys). Values that HF derives from
defaults (e.g. head_dim = hidden_size / heads) are filled in so consumers need no GGUF knowledge.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from maxcli.weights.weight_data import WeightsError

if TYPE_CHECKING:
    from maxcli.weights.gguf import GGUFFile

# GGUF architecture -> (HF model_type, HF architectures[0])
_ARCHS: dict[str, tuple[str, str]] = {
    "llama": ("llama", "LlamaForCausalLM"),
    "mistral": ("mistral", "MistralForCausalLM"),
    "qwen2": ("qwen2", "Qwen2ForCausalLM"),
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
    "phi3": ("phi3", "Phi3ForCausalLM"),
}

# "{arch}." suffix -> HF key
_COMMON_KEYS = {
    "context_length": "max_position_embeddings",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "vocab_size": "vocab_size",
    "attention.sliding_window": "sliding_window",
    "attention.key_length": "head_dim",
}

_TOKEN_KEYS = {
    "tokenizer.ggml.bos_token_id": "bos_token_id",
    "tokenizer.ggml.eos_token_id": "eos_token_id",
    "tokenizer.ggml.padding_token_id": "pad_token_id",
}


def hf_architecture(gguf: "GGUFFile") -> str:
    """The GGUF architecture name as maxcli understands it: llama files of Mistral models -> mistral."""
    arch = gguf.architecture
    if arch == "llama":
        name = str(gguf.get("general.name", "") or "").lower()
        if "mistral" in name or gguf.get("llama.attention.sliding_window") is not None:
            return "mistral"
    return arch


def _rope_scaling(gguf: "GGUFFile", arch: str, config: dict[str, Any]) -> dict[str, Any] | None:
    key = gguf.architecture
    kind = gguf.get(f"{key}.rope.scaling.type")
    factor = gguf.get(f"{key}.rope.scaling.factor")
    orig = gguf.get(f"{key}.rope.scaling.original_context_length")
    tensors = gguf.tensors
    if "rope_factors_long.weight" in tensors and "rope_factors_short.weight" in tensors:
        if orig is not None:
            config["original_max_position_embeddings"] = int(orig)
        return {
            "rope_type": "longrope",
            "long_factor": tensors["rope_factors_long.weight"].to_tensor().tolist(),
            "short_factor": tensors["rope_factors_short.weight"].to_tensor().tolist(),
        }
    if "rope_freqs.weight" in tensors and arch in ("llama", "mistral"):
        return _llama3_scaling(tensors["rope_freqs.weight"].to_tensor().tolist(), config)
    if kind in (None, "none") or factor is None:
        return None
    scaling: dict[str, Any] = {"rope_type": str(kind), "factor": float(factor)}
    if orig is not None:
        scaling["original_max_position_embeddings"] = int(orig)
    for suffix, hf_key in (
        ("attn_factor", "attention_factor"),
        ("yarn_beta_fast", "beta_fast"),
        ("yarn_beta_slow", "beta_slow"),
    ):
        value = gguf.get(f"{key}.rope.scaling.{suffix}")
        if value is not None:
            scaling[hf_key] = float(value)
    return scaling


def _llama3_scaling(freq_factors: list[float], config: dict[str, Any]) -> dict[str, Any]:
    """Recover Llama-3 rope_scaling from llama.cpp's per-frequency divisors (`rope_freqs.weight`).

    Per frequency i with wavelength w_i: divisor 1 (short w), `factor` (long w), and in between
    1 / ((1 - s)/factor + s) with s = (L / w - low) / (high - low). s is affine in 1/w, so two in-between
    points give L/(high-low) and low/(high-low); Llama-3 releases use low_freq_factor = 1, which fixes L.
    """
    factor = max(freq_factors)
    dim = 2 * len(freq_factors)
    base = float(config.get("rope_theta", 10000.0))
    points = []
    for i, r in enumerate(freq_factors):
        if 1.0 < r < factor:
            inv_w = base ** (-(2 * i) / dim) / (2 * math.pi)
            points.append((inv_w, (1 / r - 1 / factor) / (1 - 1 / factor)))
    scaling: dict[str, Any] = {"rope_type": "llama3", "factor": float(factor), "low_freq_factor": 1.0}
    if len(points) >= 2 and factor > 1:
        (x0, s0), (x1, s1) = points[0], points[-1]
        slope = (s1 - s0) / (x1 - x0)  # = L / (high - low)
        intercept = s0 - slope * x0  # = -low / (high - low)
        span = -1.0 / intercept  # high - low with low = 1
        scaling["high_freq_factor"] = float(round(1.0 + span, 4))
        scaling["original_max_position_embeddings"] = int(round(slope * span))
    return scaling


def gguf_to_hf_config(gguf: "GGUFFile") -> dict[str, Any]:
    """HF config.json fields for a GGUF file; WeightsError for an architecture maxcli cannot run."""
    file_arch = gguf.architecture
    arch = hf_architecture(gguf)
    if arch not in _ARCHS:
        raise WeightsError(f"{gguf.path}: GGUF architecture {file_arch!r} is not supported (supported: {', '.join(_ARCHS)})")
    model_type, hf_arch = _ARCHS[arch]
    config: dict[str, Any] = {"architectures": [hf_arch], "model_type": model_type}
    for suffix, hf_key in _COMMON_KEYS.items():
        value = gguf.get(f"{file_arch}.{suffix}")
        if value is not None:
            config[hf_key] = value
    for key, hf_key in _TOKEN_KEYS.items():
        value = gguf.get(key)
        if value is not None:
            config[hf_key] = value
    if "vocab_size" not in config:
        n_tokens = gguf.array_length("tokenizer.ggml.tokens")
        if n_tokens is None:
            raise WeightsError(f"{gguf.path}: GGUF file gives no vocab_size and no tokenizer vocabulary")
        config["vocab_size"] = n_tokens
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads") if k not in config]
    if missing:
        raise WeightsError(f"{gguf.path}: GGUF metadata lacks {', '.join(missing)}")
    config.setdefault("pad_token_id", None)  # HF class defaults (e.g. phi3's 32000) may lie outside the vocab
    config.setdefault("num_key_value_heads", config["num_attention_heads"])
    if "head_dim" not in config:
        rope_dim = gguf.get(f"{file_arch}.rope.dimension_count")
        config["head_dim"] = rope_dim if arch in ("llama", "mistral") and rope_dim else (
            config["hidden_size"] // config["num_attention_heads"]
        )
    config.setdefault("rope_theta", 1_000_000.0 if arch in ("qwen2", "qwen3", "gemma3") else 10_000.0)
    config.setdefault("rms_norm_eps", 1e-6 if arch in ("qwen2", "qwen3", "gemma3") else 1e-5)
    config["tie_word_embeddings"] = "output.weight" not in gguf.tensors
    config["rope_scaling"] = _rope_scaling(gguf, arch, config)
    config["torch_dtype"] = "float32"
    if arch == "phi3":
        config.setdefault("original_max_position_embeddings", config.get("max_position_embeddings"))
        rope_dim = gguf.get("phi3.rope.dimension_count")
        if rope_dim and config["head_dim"]:
            config["partial_rotary_factor"] = rope_dim / config["head_dim"]
    if arch == "gemma3":
        # llama.cpp scales queries by 1/sqrt(hidden/heads) for the 62-layer (27B) model, else 1/sqrt(head_dim)
        big = config["num_hidden_layers"] == 62
        config["query_pre_attn_scalar"] = config["hidden_size"] // config["num_attention_heads"] if big else config["head_dim"]
        config["rope_local_base_freq"] = float(gguf.get("gemma3.rope.freq_base_swa", 10_000.0))
        pattern = gguf.get("gemma3.attention.sliding_window_pattern")
        config["sliding_window_pattern"] = int(pattern) if isinstance(pattern, int) else 6
    if arch in ("qwen3", "gemma3"):
        config["qk_norm"] = True  # per-head RMSNorm on q and k (attn_q_norm / attn_k_norm tensors)
    return config
