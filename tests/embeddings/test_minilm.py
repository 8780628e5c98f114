"""The real all-MiniLM-L6-v2 against HF transformers + sentence-transformers pooling (mean, normalize)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from maxcli.interfaces import EmbeddingsGenerationInputs, InputError
from maxcli.pipelines.lib.embeddings import EmbeddingsPipeline
from maxcli.pipelines.lib.pooling import PoolingConfig, PoolingMode

SENTENCES = [
    "Hi",
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on stage.",
    "What's the weather like in Paris tomorrow?!",
    "¿Dónde está la biblioteca? Está cerca de la estación.",
    "Müller & Söhne GmbH — gegründet 1887 in Köln.",
    "東京は日本の首都です。",
    "Привет, как дела?",
    "3.14159265358979 is approximately pi; e ≈ 2.71828.",
    "Order #12345 shipped on 2024-03-15 at 09:41 UTC for $1,299.99.",
    "!!! ??? ... ;;; ---",
    "email me at someone@example.com or visit https://example.org/path?q=1",
    "emoji test 🚀🔥👍 rocket fire thumbs",
    "   leading and trailing spaces   ",
    "UPPERCASE SHOUTING TEXT SHOULD BE LOWERCASED BY THE TOKENIZER",
    "def forward(self, x): return torch.relu(x @ self.weight.T)",
    "a",
    "Sentence embeddings map text to dense vectors so that similar meanings lie close together. " * 6,
    "In 1492, Columbus sailed the ocean blue; in 1969, Apollo 11 landed on the Moon.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopic",
]


def hf_sentence_embeddings(hf_model, tokenizer, texts: list[str], max_length: int) -> np.ndarray:
    """sentence-transformers' recipe on HF AutoModel: tokenize (truncating at max_seq_length), mean over
    real tokens, L2-normalize."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = hf_model(**enc).last_hidden_state
    mask = enc["attention_mask"][..., None].float()
    mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=-1).numpy()


def test_pooling_read_from_sentence_transformers_files(minilm_pipeline: EmbeddingsPipeline) -> None:
    assert minilm_pipeline.pooling == PoolingConfig((PoolingMode.MEAN,), normalize=True)
    assert minilm_pipeline.max_length == 256  # sentence_bert_config.json max_seq_length
    assert minilm_pipeline.embedding_dim == 384


def test_matches_hf_transformers(minilm_pipeline: EmbeddingsPipeline, minilm_hf) -> None:
    ours = minilm_pipeline.embed(SENTENCES)
    ref = hf_sentence_embeddings(minilm_hf, minilm_pipeline.tokenizer, SENTENCES, minilm_pipeline.max_length)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    cosine = (ours * ref).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cosine.min() >= 0.9999, f"worst cosine {cosine.min()} for {SENTENCES[int(cosine.argmin())]!r}"
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # Different sentences must give different vectors (the model is not collapsing to a constant).
    assert (ours[0] @ ours[1]) < 0.9


def test_mixed_batch_equals_alone(minilm_pipeline: EmbeddingsPipeline) -> None:
    texts = SENTENCES[::-1]  # long and short interleaved across batches of 8
    batched = minilm_pipeline.embed(texts)
    for text, vector in zip(texts, batched):
        alone = minilm_pipeline.embed([text])[0]
        np.testing.assert_allclose(vector, alone, atol=1e-5)


def test_execute_returns_vector_per_request(minilm_pipeline: EmbeddingsPipeline) -> None:
    contexts = [minilm_pipeline.new_context(t) for t in SENTENCES[:5]]
    inputs = EmbeddingsGenerationInputs(
        batches=[{c.request_id: c for c in contexts[:2]}, {c.request_id: c for c in contexts[2:]}]
    )
    outputs = minilm_pipeline.execute(inputs)
    assert list(outputs) == [c.request_id for c in contexts]
    for c in contexts:
        out = outputs[c.request_id]
        assert out.request_id == c.request_id and out.num_tokens == len(c.tokens) and out.is_done
        np.testing.assert_allclose(out.embeddings, minilm_pipeline.embed([SENTENCES[contexts.index(c)]])[0], atol=1e-5)
    # Token-id prompts are taken as given.
    by_ids = minilm_pipeline.new_context(contexts[1].tokens)
    assert by_ids.tokens == contexts[1].tokens


def test_too_long_input_is_rejected_then_truncated(minilm_pipeline: EmbeddingsPipeline, minilm_hf) -> None:
    long_text = "hello " * 400
    n_tokens = len(minilm_pipeline.tokenizer(long_text)["input_ids"])
    assert n_tokens > 256
    with pytest.raises(InputError, match=rf"{n_tokens} tokens.*max_length 256"):
        minilm_pipeline.embed([long_text, "short"])
    truncating = EmbeddingsPipeline(
        minilm_pipeline.model, minilm_pipeline.tokenizer, minilm_pipeline.pooling, 256, truncate=True
    )
    vector = truncating.embed([long_text])[0]
    ref = hf_sentence_embeddings(minilm_hf, minilm_pipeline.tokenizer, [long_text], 256)[0]
    assert float(vector @ ref) >= 0.9999
    # Pre-tokenized input cut by execute keeps the trailing [SEP], like the tokenizer's truncation.
    ids = minilm_pipeline.tokenizer(long_text)["input_ids"]
    ctx = truncating.new_context(ids)
    assert len(ctx.tokens) == 256 and ctx.tokens[-1] == minilm_pipeline.tokenizer.sep_token_id
    outputs = truncating.execute(EmbeddingsGenerationInputs([{ctx.request_id: ctx}]))
    np.testing.assert_allclose(outputs[ctx.request_id].embeddings, vector, atol=1e-5)


def test_bad_inputs_raise_input_error(minilm_pipeline: EmbeddingsPipeline) -> None:
    empty = minilm_pipeline.new_context([])
    with pytest.raises(InputError, match="empty"):
        minilm_pipeline.execute(EmbeddingsGenerationInputs([{empty.request_id: empty}]))
    bad = minilm_pipeline.new_context([101, 999_999, 102])
    with pytest.raises(InputError, match="999999 is outside the vocabulary"):
        minilm_pipeline.execute(EmbeddingsGenerationInputs([{bad.request_id: bad}]))
    with pytest.raises(InputError, match="list of texts"):
        minilm_pipeline.embed("not a list")  # type: ignore[arg-type]
    assert minilm_pipeline.embed([]).shape == (0, 384)
