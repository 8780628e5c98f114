"""Shared fixtures: the real all-MiniLM-L6-v2 pipeline and its HF transformers reference (the folder itself
comes from the session fixture `minilm_dir` in tests/conftest.py, which fetches it when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def minilm_pipeline(minilm_dir: Path):
    from maxcli.pipelines.lib.embeddings import EmbeddingsPipeline
    from maxcli.pipelines.lib.entrypoints import load_embedding_model

    model, tokenizer, pooling, max_length = load_embedding_model(minilm_dir)
    return EmbeddingsPipeline(model, tokenizer, pooling, max_length, max_batch_size=8)


@pytest.fixture(scope="session")
def minilm_hf(minilm_dir: Path):
    from transformers import AutoModel

    torch.manual_seed(0)
    return AutoModel.from_pretrained(minilm_dir).eval()
