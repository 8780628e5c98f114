"""Shared fixtures: the real all-MiniLM-L6-v2 folder and its HF transformers reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

MINILM_DIR = Path(__file__).resolve().parents[2] / ".cache" / "test-models" / "all-MiniLM-L6-v2"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    if not (MINILM_DIR / "model.safetensors").is_file():
        pytest.skip(f"real test model missing: {MINILM_DIR}")
    return MINILM_DIR


@pytest.fixture(scope="session")
def minilm_pipeline(minilm_dir: Path):
    from maxcli.pipelines.lib.embeddings import EmbeddingsPipeline, load_embedding_model

    model, tokenizer, pooling, max_length = load_embedding_model(minilm_dir)
    return EmbeddingsPipeline(model, tokenizer, pooling, max_length, max_batch_size=8)


@pytest.fixture(scope="session")
def minilm_hf(minilm_dir: Path):
    from transformers import AutoModel

    torch.manual_seed(0)
    return AutoModel.from_pretrained(minilm_dir).eval()
