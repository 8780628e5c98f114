"""A whole model forward with every op on Triton (the interpreter on CPU) equals the torch path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from transformers import Gemma3TextConfig, LlamaConfig

from maxcli import ops
from maxcli.architectures.gemma3.model import Gemma3ForCausalLM
from maxcli.architectures.llama3.model import LlamaForCausalLM, kv_cache_shape

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from paged_harness import PagedRunner, Sequence  # noqa: E402

pytest.importorskip("triton")

SMALL = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=64)


def random_model(cls, config, seed=0):
    torch.manual_seed(seed)
    model = cls(config).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def run(model, config, backend):
    runner = PagedRunner(model, kv_cache_shape(config), page_size=4, num_blocks=16, seed=3)
    seqs = [Sequence(), Sequence()]
    with ops.force_backend(backend), torch.no_grad():
        out = runner.step(seqs, [[1, 5, 9, 11, 3, 7], [2, 4, 6]])  # prefill: 6 and 3 tokens
        out += runner.step(seqs, [[8], [10]])  # decode across a page boundary for the first
    return out


@pytest.mark.parametrize(
    "cls, config",
    [
        (LlamaForCausalLM, LlamaConfig(**SMALL, tie_word_embeddings=True)),
        (Gemma3ForCausalLM, Gemma3TextConfig(**SMALL, sliding_window=3, layer_types=["sliding_attention", "full_attention"],
                                             final_logit_softcapping=5.0, query_pre_attn_scalar=16)),
    ],
    ids=["llama", "gemma3-window-softcap"],
)
def test_model_forward_triton_equals_torch(cls, config):
    model = random_model(cls, config)
    ref = run(model, config, "torch")
    got = run(model, config, "triton")
    for a, b in zip(got, ref):
        assert a.abs().max() > 0.1
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
