"""Tiny random-weight checkpoints written the way users' folders look (config.json, safetensors,
tokenizer files), shared by the generation and server tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def write_tiny_llama(
    folder: Path, tokenizer_source: Path, seed: int = 0, max_positions: int = 256, **config_json: Any
) -> Path:
    """A random-weight LlamaForCausalLM (2 layers, GQA, untied head) saved as safetensors, with the
    tokenizer of `tokenizer_source` (a .gguf file) beside it so the folder loads on its own.

    `config_json` entries are written into config.json over transformers' own (e.g. architectures, to
    name a custom architecture, and its extra fields)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source.parent, gguf_file=tokenizer_source.name)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        initializer_range=0.1,  # peaked logits: greedy picks are not near-ties
    )
    write_tiny_checkpoint(folder, tokenizer, config, seed, LlamaForCausalLM)
    if config_json:
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config_json}, indent=2))
    return folder


def write_tiny_checkpoint(folder: Path, tokenizer: Any, config: Any, seed: int = 0, model_cls: Any = None) -> Path:
    """Random float32 weights for `config` (a transformers config; `model_cls` defaults to the causal-LM
    class transformers maps it to) saved as safetensors, with `tokenizer` (a transformers tokenizer)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = model_cls(config) if model_cls is not None else AutoModelForCausalLM.from_config(config)
    model.to(torch.float32).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
