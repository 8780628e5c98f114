"""Shared fixtures: the real test models (fetched once into the cache by maxcli.weights.test_models)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

# Triton decides interpreter mode when it is first imported (its own library kernels are jit-decorated
# then), so it must be set before any test module or library imports triton: here, at session start.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from maxcli.weights.test_models import fetch_minilm, fetch_smollm2


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 GGUF (llama architecture, tokenizer and chat template inside)."""
    return fetch_smollm2()


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 folder: BertModel safetensors, tokenizer, sentence-transformers files."""
    return fetch_minilm()
