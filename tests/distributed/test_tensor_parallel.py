"""Tensor parallelism on CPU (gloo ranks spawned on loopback): TP=2 must produce the greedy tokens of TP=1
on tiny random checkpoints of every native architecture and on the real SmolLM2 GGUF (9 query heads over
3 KV heads: uneven GQA groups, 2 + 1), and bad splits fail with one line before or while loading."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import transformers

from maxcli.config import ConfigError
from maxcli.engine.llm import LLM
from tiny_checkpoints import write_tiny_checkpoint

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a land far"]
NEW_TOKENS = 12


def _small(tokenizer: Any, **overrides: Any) -> dict[str, Any]:
    base = dict(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_range=0.1,
    )
    return {**base, **overrides}


# Each config exercises a different split: untied head + row-parallel biases, head_dim != hidden/heads with
# a sliding window, one KV head replicated on both ranks (MQA) with q/k/v biases and a tied head, per-head
# q/k norms, Gemma's norms/softcaps/per-layer-type ropes, Phi-3's fused checkpoint tensors.
ARCHS: dict[str, Callable[[Any], transformers.PretrainedConfig]] = {
    "llama-untied-biases": lambda t: transformers.LlamaConfig(
        **_small(t, tie_word_embeddings=False, attention_bias=True, mlp_bias=True)),
    "mistral-sliding": lambda t: transformers.MistralConfig(**_small(t, head_dim=8, sliding_window=4)),
    "qwen2-mqa-tied": lambda t: transformers.Qwen2Config(
        **_small(t, num_key_value_heads=1, tie_word_embeddings=True)),
    "qwen3-qk-norm": lambda t: transformers.Qwen3Config(**_small(t, head_dim=24)),
    "gemma3": lambda t: transformers.Gemma3TextConfig(
        **_small(t, num_hidden_layers=3, head_dim=16, query_pre_attn_scalar=24, sliding_window=5,
                 layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                 final_logit_softcapping=3.0, attn_logit_softcapping=20.0)),
    "phi3-fused": lambda t: transformers.Phi3Config(**_small(t, partial_rotary_factor=0.5)),
}


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf: Path) -> Any:
    return transformers.AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


def greedy_tokens(model: str, tp: int, **config: Any) -> list[list[int]]:
    with LLM(model=model, tensor_parallel_size=tp, max_length=128, max_batch_size=4, **config) as llm:
        assert llm.engine.pipeline.pipeline_model.tp.size == tp
        params = llm.default_sampling_params(max_new_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
        return [o.token_ids for o in llm.generate(PROMPTS, params)]


@pytest.mark.parametrize("name", list(ARCHS))
def test_tp2_matches_tp1_on_tiny_models(name: str, tokenizer: Any, tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / name, tokenizer, ARCHS[name](tokenizer), seed=3)
    single = greedy_tokens(str(folder), 1)
    assert all(len(t) == NEW_TOKENS for t in single)
    assert len({tuple(t) for t in single}) > 1  # prompts lead to different continuations
    assert greedy_tokens(str(folder), 2) == single


def test_tp2_matches_tp1_on_smollm2_gguf(smollm2_gguf: Path) -> None:
    single = greedy_tokens(str(smollm2_gguf), 1)
    assert greedy_tokens(str(smollm2_gguf), 2) == single


def test_split_that_does_not_fit_fails_with_one_line(tokenizer: Any, tmp_path: Path) -> None:
    # 4 query heads over 1 KV head on 3 ranks: 3 neither divides 1 nor splits the 4-head group evenly.
    config = transformers.Qwen2Config(**_small(tokenizer, num_key_value_heads=1))
    folder = write_tiny_checkpoint(tmp_path / "mqa", tokenizer, config)
    with pytest.raises(ValueError, match="cannot split 4 query heads over 1 KV heads") as info:
        LLM(model=str(folder), tensor_parallel_size=3, max_length=64, max_batch_size=2)
    assert "\n" not in str(info.value)


def test_unsupported_combinations_are_config_errors(smollm2_gguf: Path, minilm_dir: Path) -> None:
    with pytest.raises(ConfigError, match="does not support multiple devices"):
        from maxcli.config import PipelineConfig
        from maxcli.pipelines.lib.entrypoints import load_embeddings_pipeline

        load_embeddings_pipeline(PipelineConfig(model_path=str(minilm_dir), tensor_parallel_size=2))
    with pytest.raises(ConfigError, match="huggingface"):
        LLM(model=str(smollm2_gguf), tensor_parallel_size=2, engine="huggingface")
