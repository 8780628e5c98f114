"""Tiny random-weight BERT and Qwen3 embedding models against HF transformers (within 1e-4)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import BertConfig, BertForMaskedLM, BertModel, Qwen3Config, Qwen3Model

from maxcli.architectures.bert.model import BertEmbeddingModel
from maxcli.interfaces import EmbeddingsGenerationInputs
from maxcli.architectures.qwen3.embedding_model import Qwen3EmbeddingModel
from maxcli.pipelines.lib.embeddings import EmbeddingsPipeline
from maxcli.pipelines.lib.entrypoints import load_embedding_model
from maxcli.pipelines.lib.pooling import PoolingConfig, PoolingMode

VOCAB = 30522  # the MiniLM tokenizer's vocabulary, so folders built here load a real tokenizer


def tiny_bert_config(**overrides) -> BertConfig:
    values = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, type_vocab_size=2)
    values.update(overrides)
    return BertConfig(**values)


def tiny_qwen3_config(**overrides) -> Qwen3Config:
    values = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128)
    values.update(overrides)
    return Qwen3Config(**values)


def random_batch(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask; row lengths vary from 1 to `length`."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=g)
    lengths = torch.randint(1, length + 1, (batch,), generator=g)
    lengths[0] = length
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids, mask


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_bert_last_hidden_state_matches_hf(hidden_act: str) -> None:
    torch.manual_seed(0)
    config = tiny_bert_config(hidden_act=hidden_act)
    hf = BertModel(config).eval()
    ours = BertEmbeddingModel(config)
    ours.load_weights(hf.state_dict())
    ids, mask = random_batch(4, 12, seed=1)
    token_types = torch.randint(0, 2, ids.shape)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=token_types).last_hidden_state
    out = ours(ids, mask, token_types)
    real = mask.bool()
    torch.testing.assert_close(out[real], ref[real], atol=1e-4, rtol=0)


def test_bert_loads_prefixed_names_and_ignores_heads() -> None:
    torch.manual_seed(0)
    config = tiny_bert_config()
    mlm = BertForMaskedLM(config).eval()  # names "bert.encoder..." plus "cls.predictions..."
    ours = BertEmbeddingModel(config)
    ours.load_weights(mlm.state_dict())
    ids, mask = random_batch(2, 8, seed=2)
    with torch.no_grad():
        ref = mlm.bert(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours(ids, mask)[mask.bool()], ref[mask.bool()], atol=1e-4, rtol=0)


def test_bert_weight_errors_are_clear() -> None:
    config = tiny_bert_config()
    state = BertModel(config).state_dict()
    ours = BertEmbeddingModel(config)
    with pytest.raises(RuntimeError, match="load_weights first"):
        ours(torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 2))
    with pytest.raises(ValueError, match="unexpected BERT weight 'encoder.extra.weight'"):
        ours.load_weights({**state, "encoder.extra.weight": torch.zeros(1)})
    incomplete = {k: v for k, v in state.items() if "layer.1.output.dense" not in k}
    with pytest.raises(ValueError, match="missing.*layers.1.ffn_out"):
        ours.load_weights(incomplete)
    wrong_shape = {**state, "embeddings.word_embeddings.weight": torch.zeros(10, 32)}
    with pytest.raises(ValueError, match="has shape"):
        ours.load_weights(wrong_shape)
    with pytest.raises(ValueError, match="position_embedding_type"):
        BertEmbeddingModel(tiny_bert_config(position_embedding_type="relative_key"))


def test_bert_accepts_readers_with_to_tensor() -> None:
    class Reader:  # the shape of a weights-file entry (safetensors / GGUF readers expose .to_tensor)
        def __init__(self, tensor: torch.Tensor) -> None:
            self.tensor = tensor

        def to_tensor(self, dtype: torch.dtype) -> torch.Tensor:
            return self.tensor.to(dtype)

    torch.manual_seed(0)
    config = tiny_bert_config()
    hf = BertModel(config).eval()
    ours = BertEmbeddingModel(config, dtype=torch.bfloat16)
    ours.load_weights({k: Reader(v) for k, v in hf.state_dict().items()})
    assert ours.word_embeddings.weight.dtype == torch.bfloat16
    ids, mask = random_batch(2, 8, seed=3)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    out = ours(ids, mask).float()
    cos = torch.nn.functional.cosine_similarity(out[mask.bool()], ref[mask.bool()], dim=-1)
    assert cos.min() > 0.99  # bfloat16 weights and activations


def hf_qwen3_embeddings(hf: Qwen3Model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Qwen3-Embedding's recipe: last hidden state at each row's last real token, L2-normalized."""
    with torch.no_grad():
        hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    last = mask.sum(dim=1) - 1
    return torch.nn.functional.normalize(hidden[torch.arange(len(ids)), last], dim=-1)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"attention_bias": True}, {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1},
     {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1000.0}}],
    ids=["plain", "bias", "sliding", "linear-rope"],
)
def test_qwen3_embeddings_match_hf(overrides: dict) -> None:
    torch.manual_seed(0)
    config = tiny_qwen3_config(**overrides)
    hf = Qwen3Model(config).eval()
    model = Qwen3EmbeddingModel(config)
    model.load_weights({f"model.{k}": v for k, v in hf.state_dict().items()} | {"lm_head.weight": torch.zeros(1)})
    ids, mask = random_batch(4, 10, seed=4)
    with torch.no_grad():
        ref_hidden = hf(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(model(ids, mask)[mask.bool()], ref_hidden[mask.bool()], atol=1e-4, rtol=0)
    pipeline = EmbeddingsPipeline(model, tokenizer=None, pooling=PoolingConfig.default(is_decoder=True), max_length=64)
    contexts = {}
    for row in range(len(ids)):
        ctx = pipeline.new_context(ids[row, : int(mask[row].sum())].tolist())
        contexts[ctx.request_id] = ctx
    outputs = pipeline.execute(EmbeddingsGenerationInputs([contexts]))
    ours = np.stack([outputs[rid].embeddings for rid in contexts])
    np.testing.assert_allclose(ours, hf_qwen3_embeddings(hf, ids, mask).numpy(), atol=1e-4)


def test_qwen3_weight_errors_are_clear() -> None:
    config = tiny_qwen3_config()
    state = Qwen3Model(config).state_dict()
    model = Qwen3EmbeddingModel(config)
    with pytest.raises(ValueError, match="lacks mlp.up_proj.weight"):
        model.load_weights({k: v for k, v in state.items() if k != "layers.0.mlp.up_proj.weight"})
    with pytest.raises(ValueError, match="unexpected Qwen3 weight 'vision.w'"):
        model.load_weights({**state, "vision.w": torch.zeros(1)})
    with pytest.raises(ValueError, match="rope_type 'dynamic'"):
        dynamic = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}
        Qwen3EmbeddingModel(tiny_qwen3_config(rope_parameters=dynamic))


@settings(max_examples=8, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=7), batch_size=st.integers(1, 4))
def test_batching_never_changes_a_vector(lengths: list[int], batch_size: int) -> None:
    """Any mix of lengths and any batch size: each vector equals the one computed alone."""
    torch.manual_seed(0)
    config = tiny_bert_config()
    model = BertEmbeddingModel(config)
    model.load_weights(BertModel(config).state_dict())
    pipeline = EmbeddingsPipeline(model, None, PoolingConfig((PoolingMode.MEAN, PoolingMode.MAX)), 64, batch_size)
    g = torch.Generator().manual_seed(sum(lengths))
    contexts = [pipeline.new_context(torch.randint(0, VOCAB, (n,), generator=g).tolist()) for n in lengths]
    mixed = pipeline.execute(EmbeddingsGenerationInputs([{c.request_id: c for c in contexts}]))
    for c in contexts:
        alone = pipeline.execute(EmbeddingsGenerationInputs([{c.request_id: c}]))[c.request_id]
        assert mixed[c.request_id].embeddings.shape == (2 * config.hidden_size,)
        np.testing.assert_allclose(mixed[c.request_id].embeddings, alone.embeddings, atol=1e-5)


def test_load_qwen3_folder(tmp_path: Path, minilm_dir: Path) -> None:
    """A saved HF Qwen3Model folder (with a tokenizer) loads with last-token pooling by default."""
    torch.manual_seed(0)
    hf = Qwen3Model(tiny_qwen3_config()).eval()
    hf.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm_dir / name, tmp_path / name)
    model, tokenizer, pooling, max_length = load_embedding_model(tmp_path)
    assert isinstance(model, Qwen3EmbeddingModel)
    assert pooling == PoolingConfig((PoolingMode.LAST_TOKEN,), normalize=True) and max_length == 128
    texts = ["a tiny decoder", "embeds text"]
    vectors = EmbeddingsPipeline(model, tokenizer, pooling, max_length).embed(texts)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    ref = hf_qwen3_embeddings(hf, enc["input_ids"], enc["attention_mask"])
    np.testing.assert_allclose(vectors, ref.numpy(), atol=1e-4)


def test_load_rejects_other_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no config.json"):
        load_embedding_model(tmp_path)
    Qwen3Config(vocab_size=10, architectures=["Qwen3Model"]).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no model.safetensors"):
        load_embedding_model(tmp_path)
    BertConfig(vocab_size=10, architectures=["GPT2Model"]).to_json_file(tmp_path / "config.json")
    with pytest.raises(ValueError, match="GPT2Model is not an embedding architecture"):
        load_embedding_model(tmp_path)
