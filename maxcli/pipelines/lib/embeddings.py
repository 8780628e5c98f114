"""EmbeddingsPipeline: token ids in, one float32 vector per request out.

Requests are sorted by length and cut into batches of at most max_batch_size, each padded (right) only to
its own longest member, so short inputs do not pay for long ones. Attention masks padded keys, so a
request's vector does not depend on what it was batched with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig

from maxcli.interfaces import (
    EmbeddingsGenerationInputs,
    EmbeddingsGenerationOutput,
    InputError,
    Pipeline,
    RequestID,
)
from maxcli.pipelines.core import EmbeddingsContext
from maxcli.pipelines.lib.pooling import PoolingConfig, pool


class EmbeddingModel(Protocol):
    """What the pipeline needs of an embedding architecture's model (an arch's `pipeline_model` for the
    embeddings task): built as cls(hf_config, dtype), weights through load_weights(mapping), and a class
    attribute `causal` (True for a decoder: last-token pooling is its default)."""

    config: PretrainedConfig
    causal: bool

    def load_weights(self, weights: Any) -> None: ...

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor: ...


class EmbeddingsPipeline(Pipeline[Any, EmbeddingsContext]):
    def __init__(
        self,
        model: EmbeddingModel,
        tokenizer: Any,
        pooling: PoolingConfig,
        max_length: int,
        max_batch_size: int = 32,
        truncate: bool = False,
    ) -> None:
        if max_length < 1 or max_batch_size < 1:
            raise ValueError(f"max_length and max_batch_size must be >= 1, got {max_length}, {max_batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.max_batch_size = max_batch_size
        self.truncate = truncate
        self.vocab_size: int = model.config.vocab_size
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id: int = 0 if pad is None else int(pad)  # masked out; any valid id works
        self.special_ids: frozenset[int] = frozenset(getattr(tokenizer, "all_special_ids", ()))

    @property
    def embedding_dim(self) -> int:
        return self.model.config.hidden_size * len(self.pooling.modes)

    def release(self, request_id: RequestID) -> None:
        """Nothing to free: embeddings keep no per-request state between calls."""

    # -- requests -> contexts -------------------------------------------------------------------------

    def new_context(
        self, prompt: str | Sequence[int], request_id: RequestID | None = None, truncate: bool | None = None
    ) -> EmbeddingsContext:
        """Tokenize a text (with the model's special tokens) or take token ids as given."""
        cut = self.truncate if truncate is None else truncate
        if isinstance(prompt, str):
            if cut:
                tokens = self.tokenizer(prompt, truncation=True, max_length=self.max_length)["input_ids"]
            else:
                # verbose=False: the length check below reports too-long inputs, not a tokenizer warning.
                tokens = self.tokenizer(prompt, verbose=False)["input_ids"]
        else:
            tokens = [int(t) for t in prompt]
            if cut:
                tokens = self._cut(tokens)
        return EmbeddingsContext(request_id=RequestID(request_id), tokens=list(tokens))

    def _cut(self, tokens: list[int]) -> list[int]:
        """The first max_length tokens, keeping a trailing special token ([SEP], eos) as tokenizers do."""
        if len(tokens) <= self.max_length:
            return tokens
        if tokens[-1] in self.special_ids and self.max_length > 1:
            return tokens[: self.max_length - 1] + [tokens[-1]]
        return tokens[: self.max_length]

    def _checked_tokens(self, context: EmbeddingsContext) -> list[int]:
        tokens = context.tokens
        if not tokens:
            raise InputError(f"request {context.request_id}: input is empty (0 tokens)")
        if len(tokens) > self.max_length:
            if not self.truncate:
                raise InputError(
                    f"request {context.request_id}: input has {len(tokens)} tokens, more than the model's "
                    f"max_length {self.max_length}; shorten it or enable truncation"
                )
            tokens = self._cut(tokens)
        bad = next((t for t in tokens if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise InputError(
                f"request {context.request_id}: token id {bad} is outside the vocabulary [0, {self.vocab_size})"
            )
        return tokens

    # -- execution --------------------------------------------------------------------------------------

    def execute(
        self, inputs: EmbeddingsGenerationInputs[EmbeddingsContext]
    ) -> dict[RequestID, EmbeddingsGenerationOutput]:
        """One vector per request (numpy float32). Every request is validated before any compute."""
        requests = [(rid, self._checked_tokens(ctx)) for rid, ctx in inputs.batch.items()]
        order = sorted(range(len(requests)), key=lambda i: len(requests[i][1]))
        vectors: dict[int, np.ndarray] = {}
        for start in range(0, len(order), self.max_batch_size):
            chunk = order[start : start + self.max_batch_size]
            for i, vec in zip(chunk, self._embed_batch([requests[i][1] for i in chunk])):
                vectors[i] = vec
        return {
            rid: EmbeddingsGenerationOutput(request_id=rid, embeddings=vectors[i], num_tokens=len(tokens))
            for i, (rid, tokens) in enumerate(requests)
        }

    def _embed_batch(self, batch: list[list[int]]) -> np.ndarray:
        """Pad right to the batch's longest input, run the model, pool: [len(batch), embedding_dim]."""
        length = max(len(t) for t in batch)
        input_ids = torch.tensor([t + [self.pad_token_id] * (length - len(t)) for t in batch], dtype=torch.long)
        lengths = torch.tensor([len(t) for t in batch])
        attention_mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
        with torch.inference_mode():
            hidden = self.model(input_ids, attention_mask)
            return pool(hidden, attention_mask, self.pooling).numpy()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), embedding_dim] float32, rows in the order of `texts` (for the CLI and server)."""
        if isinstance(texts, str):
            raise InputError("embed() takes a list of texts, not a single string")
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        return self.embed_with_counts(texts)[0]

    def embed_with_counts(self, texts: Sequence[str | Sequence[int]]) -> tuple[np.ndarray, list[int]]:
        """(vectors [N, D] in input order, token count of each input after truncation)."""
        if isinstance(texts, str):
            raise InputError("embed() takes a list of texts, not a single string")
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32), []
        contexts = [self.new_context(text) for text in texts]
        outputs = self.execute(EmbeddingsGenerationInputs(batches=[{c.request_id: c for c in contexts}]))
        vectors = np.stack([outputs[c.request_id].embeddings for c in contexts])
        return vectors, [outputs[c.request_id].num_tokens for c in contexts]


# -- loading --------------------------------------------------------------------------------------------


def _weight_files(model_dir: Path) -> list[Path]:
    for name in ("model.safetensors", "model.safetensors.index.json"):
        if (model_dir / name).is_file():
            return [model_dir / name]
    raise ValueError(f"{model_dir}: no model.safetensors or model.safetensors.index.json")


def _max_length(model_dir: Path, config: PretrainedConfig) -> int:
    """sentence-transformers' max_seq_length when given, else the model's position limit."""
    limit = int(config.max_position_embeddings)
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        seq = json.loads(st_config.read_text()).get("max_seq_length")
        if isinstance(seq, int) and seq > 0:
            return min(seq, limit)
    return limit


def load_embedding_folder(
    model_dir: str | Path, model_cls: type, dtype: torch.dtype = torch.float32, weight_paths: Sequence[Path] | None = None
) -> tuple[EmbeddingModel, Any, PoolingConfig, int]:
    """(model, tokenizer, pooling, max_length) from a local HF / sentence-transformers folder, the model
    built by the architecture's `model_cls` (an EmbeddingModel).

    Weights are read lazily through maxcli.weights (memory-mapped; one-line WeightsError when corrupt)."""
    from maxcli.weights import load_weights

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir}: not a model folder (no config.json)")
    config = AutoConfig.from_pretrained(model_dir)
    model = model_cls(config, dtype)
    model.load_weights(load_weights(list(weight_paths or _weight_files(model_dir))))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pooling = PoolingConfig.from_model_dir(model_dir, bool(getattr(model_cls, "causal", False)))
    return model, tokenizer, pooling, _max_length(model_dir, config)


def build_embeddings_pipeline(resolved: Any, arch: Any, tokenizer: Any = None) -> EmbeddingsPipeline:
    """The registry's builder: a local folder (or a hub snapshot) loaded with its pooling files."""
    repo_id = resolved.config.model_path
    model_dir = Path(repo_id)
    if not model_dir.is_dir():
        from huggingface_hub import snapshot_download

        model_dir = Path(snapshot_download(repo_id, revision=resolved.config.huggingface_model_revision))
    model, hf_tokenizer, pooling, max_length = load_embedding_folder(
        model_dir, arch.pipeline_model, dtype=resolved.encoding.dtype, weight_paths=resolved.weight_paths
    )
    if resolved.config.max_length is not None:
        max_length = min(max_length, resolved.config.max_length)
    return EmbeddingsPipeline(model, hf_tokenizer, pooling, max_length, max_batch_size=resolved.config.max_batch_size)
