"""Rotary position tables shared by the native architectures.

Inverse frequencies follow transformers' modeling_rope_utils for each `rope_type` (default, linear,
dynamic, yarn, longrope, llama3), so a config read from a checkpoint gives the same rotation as HF.
A table row p holds [cos(p * f) * a | sin(p * f) * a] for the rotated dims (a = attention factor),
the layout `maxcli.ops.rotary_embedding` reads. Cost: max_position_embeddings * rotary_dim float32
per distinct table, built once at model construction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from maxcli import ops
from maxcli.nn.attention_metadata import get_attention_metadata

if TYPE_CHECKING:
    from transformers import PretrainedConfig

SUPPORTED_ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


def rope_parameters(config: PretrainedConfig, layer_type: str | None = None) -> dict[str, Any]:
    """The rope dict of the config (of one layer type when rope differs per layer type, as in Gemma 3)."""
    params = getattr(config, "rope_parameters", None)
    if layer_type is not None and isinstance(params, Mapping) and layer_type in params:
        params = params[layer_type]
    if not isinstance(params, Mapping) or "rope_theta" not in params:
        raise ValueError(f"config has no rope parameters with rope_theta (layer type {layer_type!r})")
    out = dict(params)
    out.setdefault("rope_type", out.get("type", "default"))
    out.setdefault("partial_rotary_factor", getattr(config, "partial_rotary_factor", None) or 1.0)
    out.setdefault(
        "original_max_position_embeddings",
        getattr(config, "original_max_position_embeddings", None) or config.max_position_embeddings,
    )
    return out


def _exponents(dim: int) -> torch.Tensor:
    """2i / dim for i < dim / 2, in float32 (the base ** exponent of each rotated pair)."""
    return torch.arange(0, dim, 2, dtype=torch.int64).float() / dim


def _yarn(params: Mapping[str, Any], dim: int, base: float, max_pos: int) -> tuple[torch.Tensor, float]:
    orig = params["original_max_position_embeddings"]
    factor = params.get("factor") or max_pos / orig

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = params.get("attention_factor")
    if attention_factor is None:
        m, m_all = params.get("mscale"), params.get("mscale_all_dim")
        attention_factor = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)
    beta_fast, beta_slow = params.get("beta_fast") or 32, params.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        # The dim index whose wavelength fits `rotations` times into the original context.
        return dim * math.log(orig / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if params.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # a zero-width ramp would divide by zero
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = base ** _exponents(dim)
    extrapolate = 1 - ramp  # 1: keep the original frequency (high-frequency dims), 0: interpolate by factor
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    return inv_freq, float(attention_factor)


def _llama3(params: Mapping[str, Any], inv_freq: torch.Tensor) -> torch.Tensor:
    factor = params["factor"]
    low_ff, high_ff = params["low_freq_factor"], params["high_freq_factor"]
    old_ctx = params["original_max_position_embeddings"]
    low_freq_wavelen, high_freq_wavelen = old_ctx / low_ff, old_ctx / high_ff
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths are slowed by `factor`, short ones kept, the band between interpolated smoothly.
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return torch.where(medium, smoothed, scaled)


def inverse_frequencies(
    params: Mapping[str, Any], head_dim: int, max_position_embeddings: int, long: bool = False
) -> tuple[torch.Tensor, float]:
    """(inv_freq [rotary_dim / 2] float32, attention factor). `long` picks longrope's long factors."""
    rope_type = params["rope_type"]
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"unsupported rope_type {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    base = float(params["rope_theta"])
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    if rope_type == "yarn":
        return _yarn(params, dim, base, max_position_embeddings)
    if rope_type == "longrope":
        orig = params["original_max_position_embeddings"]
        factor = params.get("factor") or max_position_embeddings / orig
        attention_factor = params.get("attention_factor")
        if attention_factor is None:
            attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
        ext = torch.tensor(params["long_factor" if long else "short_factor"], dtype=torch.float32)
        if ext.shape != (dim // 2,):
            raise ValueError(f"longrope factors must have {dim // 2} entries, got {tuple(ext.shape)}")
        return 1.0 / (ext * base ** _exponents(dim)), float(attention_factor)
    inv_freq = 1.0 / (base ** _exponents(dim))
    if rope_type == "linear":
        inv_freq = inv_freq / params["factor"]
    elif rope_type == "llama3":
        inv_freq = _llama3(params, inv_freq)
    # "dynamic" (NTK) only changes frequencies past max_position_embeddings, beyond the table.
    return inv_freq, 1.0


def cos_sin_table(inv_freq: torch.Tensor, attention_factor: float, num_positions: int) -> torch.Tensor:
    freqs = torch.arange(num_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]
    return torch.cat((freqs.cos() * attention_factor, freqs.sin() * attention_factor), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotates q [T, H, D] and k [T, Hk, D] in place of position ids, by table lookup.

    longrope keeps two tables stacked: rows [0, P) use the short factors, rows [P, 2P) the long ones.
    A sequence uses the long table for a step's tokens once its context (seq_lens_k) passes
    original_max_position_embeddings, as HF does per forward; its earlier cached keys stay as written.
    """

    def __init__(
        self, params: Mapping[str, Any], head_dim: int, max_position_embeddings: int, is_neox: bool = True
    ) -> None:
        super().__init__()
        self.is_neox, self.num_positions = is_neox, max_position_embeddings
        self.long_after = params["original_max_position_embeddings"] if params["rope_type"] == "longrope" else None
        tables = [cos_sin_table(*inverse_frequencies(params, head_dim, max_position_embeddings), max_position_embeddings)]
        if self.long_after is not None:
            long = inverse_frequencies(params, head_dim, max_position_embeddings, long=True)
            tables.append(cos_sin_table(*long, max_position_embeddings))
        self.register_buffer("cos_sin_cache", torch.cat(tables), persistent=False)

    def table_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """Table rows for the step's tokens; computed once per forward and shared by all layers."""
        if self.long_after is None:
            return positions
        meta = get_attention_metadata()
        q_lens = meta.cu_seqlens_q[1:] - meta.cu_seqlens_q[:-1]
        ctx = torch.repeat_interleave(meta.seq_lens_k, q_lens, output_size=positions.shape[0])
        return positions + (ctx > self.long_after).to(positions.dtype) * self.num_positions

    def forward(
        self, table_positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return ops.rotary_embedding(table_positions, q, k, self.cos_sin_cache, self.is_neox)

    def extra_repr(self) -> str:
        return f"positions={self.num_positions}, neox={self.is_neox}, longrope_after={self.long_after}"


def rotary_embedding_for(
    config: PretrainedConfig, head_dim: int, layer_type: str | None = None, is_neox: bool = True
) -> RotaryEmbedding:
    return RotaryEmbedding(rope_parameters(config, layer_type), head_dim, config.max_position_embeddings, is_neox)
