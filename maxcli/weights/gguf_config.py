"""GGUF metadata -> the fields of a HF config.json: the generic conversion, and the GGUFArchitecture record
through which an architecture folder says how its family's files read (nothing here names a family).

Key names follow llama.cpp's `{arch}.*` convention (gguf.constants.Keys). Values that HF derives from
defaults (e.g. head_dim = hidden_size / heads) are filled in so consumers need no GGUF knowledge.

The families come from the architecture packages (maxcli.plugins, the same ones PIPELINE_REGISTRY
registers): each may export GGUF_ARCHITECTURES, a list of GGUFArchitecture.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from maxcli.weights.weight_data import WeightsError

if TYPE_CHECKING:
    from maxcli.weights.gguf import GGUFFile

@dataclass(frozen=True)
class GGUFArchitecture:
    """How one family's GGUF files become a HF config.

    gguf_name: the files' `general.architecture`; model_type / hf_architecture: what config.json would say.
    claims: for a family whose files carry another family's name (Mistral in "llama" files), whether this
    file is one of its own; checked before plain name matches. fix(gguf, config): the family's own fields,
    after the common ones. Defaults fill rope_theta / rms_norm_eps when the file gives none;
    head_dim_from_rope: head_dim is the rope dimension count (files that store no key_length).
    """

    gguf_name: str
    model_type: str
    hf_architecture: str
    rope_theta: float = 10_000.0
    rms_norm_eps: float = 1e-5
    head_dim_from_rope: bool = False
    claims: Callable[["GGUFFile"], bool] | None = None
    fix: Callable[["GGUFFile", dict[str, Any]], None] | None = None


@functools.cache
def installed_gguf_architectures() -> tuple[GGUFArchitecture, ...]:
    """GGUF_ARCHITECTURES of every architecture package (built-ins first, then plugins)."""
    from maxcli.plugins import architecture_packages  # imports the packages: only when a GGUF file is read

    return tuple(spec for package in architecture_packages() for spec in getattr(package, "GGUF_ARCHITECTURES", ()))


def gguf_architecture(gguf: "GGUFFile", architectures: tuple[GGUFArchitecture, ...] | None = None) -> GGUFArchitecture:
    """The family a GGUF file belongs to; WeightsError for a family no installed package reads."""
    specs = installed_gguf_architectures() if architectures is None else architectures
    name = gguf.architecture
    for spec in specs:
        if spec.gguf_name == name and spec.claims is not None and spec.claims(gguf):
            return spec
    for spec in specs:
        if spec.gguf_name == name and spec.claims is None:
            return spec
    supported = ", ".join(sorted({s.gguf_name for s in specs})) or "none installed"
    raise WeightsError(f"{gguf.path}: GGUF architecture {name!r} is not supported (supported: {supported})")

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


def _rope_scaling(gguf: "GGUFFile", config: dict[str, Any]) -> dict[str, Any] | None:
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


def llama3_rope_scaling(freq_factors: list[float], config: dict[str, Any]) -> dict[str, Any]:
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


def gguf_to_hf_config(gguf: "GGUFFile", architectures: tuple[GGUFArchitecture, ...] | None = None) -> dict[str, Any]:
    """HF config.json fields for a GGUF file; WeightsError for an architecture maxcli cannot run."""
    file_arch = gguf.architecture
    spec = gguf_architecture(gguf, architectures)
    config: dict[str, Any] = {"architectures": [spec.hf_architecture], "model_type": spec.model_type}
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
        config["head_dim"] = rope_dim if spec.head_dim_from_rope and rope_dim else (
            config["hidden_size"] // config["num_attention_heads"]
        )
    config.setdefault("rope_theta", spec.rope_theta)
    config.setdefault("rms_norm_eps", spec.rms_norm_eps)
    config["tie_word_embeddings"] = "output.weight" not in gguf.tensors
    config["rope_scaling"] = _rope_scaling(gguf, config)
    config["torch_dtype"] = "float32"
    if spec.fix is not None:
        spec.fix(gguf, config)
    return config
