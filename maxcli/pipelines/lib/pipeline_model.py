"""PipelineModel (the seeds' model contract) and its torch implementation over a paged KV cache."""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Sequence

import torch

from maxcli.distributed.parallel_state import current_group
from maxcli.nn.attention_metadata import AttentionMetadata, attention_metadata
from maxcli.nn.fused_decode import decode_row_chunks

if TYPE_CHECKING:
    from maxcli.config import PipelineConfig
    from maxcli.pipelines.core import TextContext


@dataclass
class ModelInputs:
    """One forward: packed tokens of every sequence, their positions, and the paged-attention metadata."""

    input_ids: torch.Tensor  # [T] int64
    positions: torch.Tensor  # [T] int64
    attention: AttentionMetadata
    request_ids: list[Any] = field(default_factory=list)
    return_n_logits: int = 1  # 1: the last token of each sequence; -1: every token (prompt logprobs)
    rows_per_context: list[int] | None = None  # logits rows of each sampled sequence (drafts); None: one each


@dataclass
class ModelOutputs:
    logits: torch.Tensor  # [B, V] float32: next-token logits of each sequence
    all_logits: torch.Tensor | None = None  # [T, V] when every token's logits were asked for


class PipelineModel(ABC):
    """A model that a TextGenerationPipeline drives: prefill inputs, decode inputs, execute."""

    def __init__(self, pipeline_config: "PipelineConfig", huggingface_config: Any) -> None:
        self.pipeline_config = pipeline_config
        self.huggingface_config = huggingface_config

    @classmethod
    @abstractmethod
    def calculate_max_seq_len(cls, pipeline_config: "PipelineConfig", huggingface_config: Any) -> int: ...

    @abstractmethod
    def execute(self, model_inputs: ModelInputs) -> ModelOutputs: ...

    @abstractmethod
    def prepare_initial_token_inputs(
        self, context_batch: Sequence["TextContext"], kv_cache_inputs: Any = None, return_n_logits: int = 1,
        drafts: Mapping[Any, list[int]] | None = None,
    ) -> ModelInputs: ...

    @abstractmethod
    def prepare_next_token_inputs(self, next_tokens: torch.Tensor, prev_model_inputs: ModelInputs) -> ModelInputs: ...


def hf_max_positions(huggingface_config: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(huggingface_config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


class TorchTextGenerationModel(PipelineModel):
    """Runs an architecture's torch module (`module_class`) over the paged KV cache.

    The module contract: module_class(hf_config, dtype), forward(input_ids, positions) -> hidden [T, H],
    compute_logits(hidden) -> float32 logits, load_weights(mapping of HF names). Attention reads the
    AttentionMetadata set around each forward.
    """

    module_class: ClassVar[type[torch.nn.Module]]

    def __init__(
        self,
        pipeline_config: "PipelineConfig",
        huggingface_config: Any,
        weights: Mapping[str, Any],
        kv_manager: Any,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
        module_swap: Callable[[torch.nn.Module, Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> None:
        """`module_swap(module, weights) -> weights still to load` runs between building the module and
        loading its weights: the loader's hook for faster implementations of its layers."""
        super().__init__(pipeline_config, huggingface_config)
        self.device, self.dtype, self.kv_manager = device, dtype, kv_manager
        self.tp = current_group()  # this rank's tensor-parallel group (size 1 without TP)
        self.tp_runtime: Any = None  # rank 0 of a TP group: its workers (maxcli.distributed.launch)
        # Installed by the loader: (input_ids [B], positions [B]) -> final hidden [B, H] for a decode step
        # (one new token per sequence), or None for a step it does not cover (maxcli.nn.fused_decode).
        self.fused_decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None
        with torch.device(device):
            module = self.module_class(huggingface_config, dtype)
        if module_swap is not None:
            weights = module_swap(module, weights)
        module.load_weights(weights)
        self.module = module.eval()
        if kv_manager is not None:
            from maxcli.nn import bind_kv_caches

            bind_kv_caches(self.module, [kv_manager.layer_caches(i) for i in range(kv_manager.params.num_layers)])

    @classmethod
    def calculate_max_seq_len(cls, pipeline_config: "PipelineConfig", huggingface_config: Any) -> int:
        limit = hf_max_positions(huggingface_config)
        if pipeline_config.max_length is not None:
            if pipeline_config.max_length > limit:
                raise ValueError(f"max_length {pipeline_config.max_length} exceeds the model's limit of {limit} tokens")
            return pipeline_config.max_length
        return limit

    # -- inputs -----------------------------------------------------------------------------------------

    def prepare_initial_token_inputs(
        self, context_batch: Sequence["TextContext"], kv_cache_inputs: Any = None, return_n_logits: int = 1,
        drafts: Mapping[Any, list[int]] | None = None,
    ) -> ModelInputs:
        """Feed each context's next chunk (its scheduled tokens, else all not yet in the cache); a context in
        `drafts` is fed its last token and its drafted tokens, with a logits row for each."""
        from maxcli.kv_cache import build_step_inputs

        drafts = drafts or {}
        batch = [(c, 1 + len(drafts[c.request_id]) if c.request_id in drafts else c.next_chunk_length)
                 for c in context_batch]
        step = build_step_inputs(self.kv_manager, batch, self.device, drafts=drafts)
        return ModelInputs(
            input_ids=step.input_ids,
            positions=step.positions,
            attention=step.attention,
            request_ids=[c.request_id for c in step.sample_contexts],
            return_n_logits=return_n_logits,
            rows_per_context=step.rows_per_context,
        )

    def prepare_next_token_inputs(self, next_tokens: torch.Tensor, prev_model_inputs: ModelInputs) -> ModelInputs:
        """Decode step after prev: one new token per sampled sequence at the next position.

        The caller has appended next_tokens to the contexts and allocated their pages (kv.alloc)."""
        prev = prev_model_inputs.attention
        assert prev.logits_indices is not None
        bs = self.kv_manager.page_size
        seq_lens = prev.seq_lens_k.long()[self._sampled_rows(prev)] + 1
        positions = seq_lens - 1
        tables = [self.kv_manager.block_table_tensor(r) for r in prev_model_inputs.request_ids]
        block_tables = torch.nn.utils.rnn.pad_sequence(tables, batch_first=True).to(self.device)
        slots = block_tables.long().gather(1, (positions // bs)[:, None])[:, 0] * bs + positions % bs
        B = len(tables)
        meta = AttentionMetadata(
            slot_mapping=slots,
            block_tables=block_tables,
            cu_seqlens_q=torch.arange(B + 1, dtype=torch.int32, device=self.device),
            seq_lens_k=seq_lens.to(torch.int32),
            max_seqlen_q=1,
            max_seqlen_k=int(seq_lens.max()),
            is_decode=True,
            logits_indices=torch.arange(B, device=self.device),
        )
        return ModelInputs(
            input_ids=next_tokens.reshape(-1).to(device=self.device, dtype=torch.int64),
            positions=positions,
            attention=meta,
            request_ids=list(prev_model_inputs.request_ids),
        )

    @staticmethod
    def _sampled_rows(meta: AttentionMetadata) -> torch.Tensor:
        """Sequence index of each logits row (the rows are the last tokens of sampled sequences)."""
        assert meta.logits_indices is not None
        return torch.searchsorted(meta.cu_seqlens_q[1:].long(), meta.logits_indices.long(), right=True)

    # -- forward ----------------------------------------------------------------------------------------

    def execute(self, model_inputs: ModelInputs) -> ModelOutputs:
        """One forward; with tensor parallelism rank 0 first broadcasts the step to the other ranks."""
        meta = model_inputs.attention
        rows = meta.logits_indices if meta.logits_indices is not None else (meta.cu_seqlens_q[1:] - 1).long()
        step = (model_inputs.input_ids, model_inputs.positions, meta, rows, model_inputs.return_n_logits)
        if self.tp.is_parallel:  # tensors travel through CPU pickles; workers move them (receive_step)
            self.tp.broadcast_object(step if self.device.type == "cpu" else _moved(step, torch.device("cpu")))
        return self.forward_step(step)

    def receive_step(self, step: tuple[Any, ...]) -> ModelOutputs:
        """A worker rank's forward of a step broadcast by rank 0."""
        return self.forward_step(step if self.device.type == "cpu" else _moved(step, self.device))

    @torch.inference_mode()
    def forward_step(self, step: tuple[Any, ...]) -> ModelOutputs:
        """(input_ids, positions, attention metadata, logits rows, return_n_logits) -> logits; every rank
        of a tensor-parallel group runs it with the same step."""
        input_ids, positions, meta, rows, return_n_logits = step
        with attention_metadata(meta):
            hidden = None
            if self.fused_decode is not None and meta.max_seqlen_q == 1:
                hidden = self.fused_decode(input_ids, positions)
            if hidden is None:
                hidden = self.module(input_ids, positions)
        if return_n_logits == -1:
            all_logits = self.module.compute_logits(hidden)
            return ModelOutputs(logits=all_logits[rows], all_logits=all_logits)
        picked = hidden[rows]
        chunks = decode_row_chunks(meta, picked.shape[0])  # the head in the pieces the body ran in
        if len(chunks) == 1:
            return ModelOutputs(logits=self.module.compute_logits(picked))
        return ModelOutputs(logits=torch.cat([self.module.compute_logits(picked[c]) for c in chunks]))


def _moved(value: Any, device: torch.device) -> Any:
    """`value` with every tensor inside (tuples, dataclasses) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_moved(v, device) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _moved(getattr(value, f.name), device) for f in dataclasses.fields(value) if f.init})
    return value
