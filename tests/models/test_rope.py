"""Rope tables against transformers' ROPE_INIT_FUNCTIONS (inverse frequencies and attention factor)."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from maxcli.architectures.rope import RotaryEmbedding, inverse_frequencies, rope_parameters

BASE = dict(hidden_size=64, num_attention_heads=4, head_dim=16, max_position_embeddings=64, rope_theta=10000.0)
CASES = {
    "linear": dict(rope_type="linear", factor=3.0),
    "dynamic": dict(rope_type="dynamic", factor=2.0),
    "llama3": dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16),
    "yarn-mscale-untruncated": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16, mscale=0.7,
                                    mscale_all_dim=1.0, beta_fast=16, beta_slow=2, truncate=False),
    "yarn-no-factor": dict(rope_type="yarn", original_max_position_embeddings=16, factor=None),
    "longrope": dict(rope_type="longrope", short_factor=[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 9.0],
                     long_factor=[2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0], original_max_position_embeddings=16),
}


@pytest.mark.parametrize("name", list(CASES))
def test_inverse_frequencies_match_transformers(name: str) -> None:
    params = dict(CASES[name], rope_theta=BASE["rope_theta"])
    config = transformers.LlamaConfig(**{k: v for k, v in BASE.items() if k != "rope_theta"}, rope_parameters=params)
    ours = rope_parameters(config)
    for long in (False, True) if name == "longrope" else (False,):
        want, want_factor = ROPE_INIT_FUNCTIONS[ours["rope_type"]](config, seq_len=17 if long else None)
        got, got_factor = inverse_frequencies(ours, 16, 64, long=long)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=0)
        assert got_factor == pytest.approx(want_factor, rel=1e-12)


def test_partial_rotary_and_table_layout() -> None:
    params = dict(rope_type="default", rope_theta=500.0, partial_rotary_factor=0.5, original_max_position_embeddings=8)
    rope = RotaryEmbedding(params, head_dim=16, max_position_embeddings=10)
    assert rope.cos_sin_cache.shape == (10, 8)  # 8 rotated dims: 4 cos + 4 sin columns
    inv = 1.0 / 500.0 ** (torch.arange(0, 8, 2).float() / 8)
    torch.testing.assert_close(rope.cos_sin_cache[3], torch.cat([(3 * inv).cos(), (3 * inv).sin()]))


def test_unsupported_rope_type_is_a_one_line_error() -> None:
    params = dict(rope_type="mrope", rope_theta=1.0, original_max_position_embeddings=8)
    with pytest.raises(ValueError, match="unsupported rope_type 'mrope'"):
        RotaryEmbedding(params, head_dim=8, max_position_embeddings=8)


def test_longrope_factor_count_is_checked() -> None:
    params = dict(rope_type="longrope", rope_theta=1e4, short_factor=[1.0], long_factor=[1.0],
                  original_max_position_embeddings=8)
    with pytest.raises(ValueError, match="longrope factors must have 4 entries"):
        RotaryEmbedding(params, head_dim=8, max_position_embeddings=16)
