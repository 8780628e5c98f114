"""POST /v1/embeddings with all-MiniLM-L6-v2 (float and base64), checked against HF transformers."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import openai
import pytest

from tests.serve.conftest import ServerProcess, start_server

MODEL = "minilm"
TEXTS = ["The cat sits on the mat.", "A completely different sentence about finance."]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Iterator[ServerProcess]:
    yield from start_server(tmp_path_factory, "embeddings", ["--model", str(minilm_dir), "--served-model-name", MODEL])


def reference(minilm_dir: Path, texts: list[str]) -> np.ndarray:
    """Mean pooling over tokens, L2-normalized (the model's sentence-transformers pipeline)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    model = AutoModel.from_pretrained(minilm_dir).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_embeddings_float_and_base64_match_transformers(server: ServerProcess, minilm_dir: Path) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    as_base64 = client.embeddings.create(model=MODEL, input=TEXTS)  # the client asks for base64 by default
    as_float = client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
    got = np.array([d.embedding for d in as_float.data], dtype=np.float32)
    np.testing.assert_allclose(np.array([d.embedding for d in as_base64.data], dtype=np.float32), got)
    np.testing.assert_allclose(got, reference(minilm_dir, TEXTS), atol=2e-4)
    assert [d.index for d in as_float.data] == [0, 1] and as_float.usage.prompt_tokens > 10


def test_text_routes_on_an_embeddings_model_are_400(server: ServerProcess) -> None:
    r = httpx.post(f"{server.base_url}/v1/chat/completions",
                   json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400 and "embeddings" in r.json()["error"]["message"]
    r = httpx.post(f"{server.base_url}/v1/embeddings", json={"model": MODEL, "input": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"
