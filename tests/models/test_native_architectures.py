"""Every native architecture against HF transformers (fp32, eager attention) on tiny random weights:
a batched prefill of prompts of different lengths, then 8 batched decode steps through the paged cache
(page size 4), each logit row within 1e-4 of HF run per sequence with its own cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, PretrainedConfig

from maxcli.architectures.gemma3.model import Gemma3ForCausalLM
from maxcli.architectures.llama3.model import LlamaForCausalLM, kv_cache_shape
from maxcli.architectures.mistral.model import MistralForCausalLM
from maxcli.architectures.phi3.model import Phi3ForCausalLM
from maxcli.architectures.qwen2.model import Qwen2ForCausalLM
from maxcli.architectures.qwen3.model import Qwen3ForCausalLM
from paged_harness import HFReference, PagedRunner, Sequence, randomize_

TOL = 1e-4
VOCAB = 96
PROMPT_LENS = (13, 5, 9)
DECODE_STEPS = 8
SMALL = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


@dataclass
class Case:
    ours: type[torch.nn.Module]
    make_config: Callable[[], PretrainedConfig]


def _llama3_rope_tied() -> PretrainedConfig:
    # SmolLM2-like: tied embeddings; llama3 scaling with an original context of 16, so head_dim 16 has
    # frequencies in all three bands (kept, smoothed, divided by factor).
    rope = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=16)
    return transformers.LlamaConfig(**SMALL, head_dim=16, tie_word_embeddings=True, rope_parameters=rope)


def _llama_yarn_biases() -> PretrainedConfig:
    rope = dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=16)
    return transformers.LlamaConfig(**SMALL, head_dim=16, attention_bias=True, mlp_bias=True, rope_parameters=rope)


def _mistral() -> PretrainedConfig:
    # head_dim 8 != hidden / heads; window 4 < every prompt, so windowed keys span pages.
    return transformers.MistralConfig(**SMALL, head_dim=8, sliding_window=4)


def _qwen2() -> PretrainedConfig:
    return transformers.Qwen2Config(**SMALL, tie_word_embeddings=True)


def _qwen3() -> PretrainedConfig:
    return transformers.Qwen3Config(**SMALL, head_dim=24)


def _gemma3() -> PretrainedConfig:
    rope = {
        "full_attention": dict(rope_type="linear", factor=2.0, rope_theta=100000.0),
        "sliding_attention": dict(rope_type="default", rope_theta=1000.0),
    }
    cfg = dict(SMALL, num_hidden_layers=3)
    return transformers.Gemma3TextConfig(
        **cfg, head_dim=16, query_pre_attn_scalar=24, sliding_window=5,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        final_logit_softcapping=3.0, rope_parameters=rope,
    )


def _phi3() -> PretrainedConfig:
    # partial rotary (8 of 16 dims -> 4 factors); original context 12 < the 13-token prompt and < the
    # other sequences' final lengths, so both factor sets run, switching mid-decode.
    rope = dict(rope_type="longrope", rope_theta=10000.0, short_factor=[1.0, 1.3, 2.1, 3.7],
                long_factor=[1.1, 2.9, 6.5, 13.0])
    return transformers.Phi3Config(**SMALL, original_max_position_embeddings=12, partial_rotary_factor=0.5,
                                   rope_parameters=rope)


CASES = {
    "llama3-rope-tied": Case(LlamaForCausalLM, _llama3_rope_tied),
    "llama-yarn-biases": Case(LlamaForCausalLM, _llama_yarn_biases),
    "mistral-sliding": Case(MistralForCausalLM, _mistral),
    "qwen2-qkv-bias": Case(Qwen2ForCausalLM, _qwen2),
    "qwen3-qk-norm": Case(Qwen3ForCausalLM, _qwen3),
    "gemma3": Case(Gemma3ForCausalLM, _gemma3),
    "phi3-longrope": Case(Phi3ForCausalLM, _phi3),
}


def build_pair(case: Case, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, PretrainedConfig]:
    config = case.make_config()
    torch.manual_seed(seed)
    hf = AutoModelForCausalLM.from_config(config, attn_implementation="eager").float().eval()
    randomize_(hf, seed)
    ours = case.ours(config)
    ours.load_weights(hf.state_dict())
    return ours.eval(), hf, config


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(CASES))
def test_prefill_and_decode_match_hf(name: str) -> None:
    ours, hf, config = build_pair(CASES[name])
    runner, ref = PagedRunner(ours, kv_cache_shape(config)), HFReference(hf)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in PROMPT_LENS]
    seqs = [Sequence() for _ in prompts]

    got = runner.step(seqs, prompts)
    for i, prompt in enumerate(prompts):
        want = ref.step(i, prompt)
        assert want.abs().max() > 0.5  # the comparison is not between near-zero logits
        assert max_diff(got[i], want) < TOL, f"prefill seq {i}: {max_diff(got[i], want)}"

    for step in range(DECODE_STEPS):
        new = [[int(t)] for t in torch.randint(3, VOCAB, (len(seqs),), generator=g)]
        got = runner.step(seqs, new)
        for i, tok in enumerate(new):
            d = max_diff(got[i], ref.step(i, tok))
            assert d < TOL, f"decode step {step} seq {i}: {d}"


def test_chunked_prefill_mixed_with_decode_matches_hf() -> None:
    """A prompt split over two steps while another sequence decodes in the same batch."""
    ours, hf, config = build_pair(CASES["mistral-sliding"], seed=3)
    runner, ref = PagedRunner(ours, kv_cache_shape(config), page_size=4), HFReference(hf)
    long_prompt, short_prompt = list(range(3, 17)), [5, 9, 11]
    a, b = Sequence(), Sequence()
    got = runner.step([a, b], [long_prompt[:6], short_prompt])
    assert max_diff(got[0], ref.step(0, long_prompt[:6])) < TOL
    assert max_diff(got[1], ref.step(1, short_prompt)) < TOL
    got = runner.step([b, a], [[7], long_prompt[6:]])
    assert max_diff(got[0], ref.step(1, [7])) < TOL
    assert max_diff(got[1], ref.step(0, long_prompt[6:])) < TOL


def test_logits_are_float32_and_weights_follow_model_dtype() -> None:
    config = _qwen2()
    model = Qwen2ForCausalLM(config, dtype=torch.bfloat16)
    assert Qwen2ForCausalLM.kv_cache_shape(config) == (2, 2, 16) and Qwen2ForCausalLM.max_seq_len(config) == 64
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    hidden = torch.randn(3, config.hidden_size, dtype=torch.bfloat16)
    assert model.compute_logits(hidden).dtype == torch.float32
