"""Shared pieces of the generation tests: greedy params, prompts, and a tiny random Llama folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from maxcli.interfaces import SamplingParams

# Shared by the tests that load the real model: small enough for a 2-core machine, big enough for
# every prompt here (the scheduler needs max_length / page_size <= pages).
MAX_LENGTH = 256
NUM_PAGES = 64


def greedy(max_new_tokens: int = 16, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, **kw)


def token_ids(outputs: list[Any]) -> list[list[int]]:
    return [o.token_ids for o in outputs]


def write_tiny_llama(folder: Path, tokenizer_source: Path, seed: int = 0) -> Path:
    """A random-weight LlamaForCausalLM (2 layers, GQA, untied head) saved as safetensors, with the
    tokenizer of `tokenizer_source` (a .gguf file) saved beside it so the folder loads on its own."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source.parent, gguf_file=tokenizer_source.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.1,  # peaked logits: greedy picks are not near-ties
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
