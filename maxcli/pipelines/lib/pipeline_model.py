"""PipelineModel (the seeds' model contract) and its torch implementation over a paged KV cache."""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping, Protocol, Sequence

import torch

from maxcli.distributed.parallel_state import current_group
from maxcli.kv_cache import KVCacheParams, build_next_decode_inputs
from maxcli.nn import bind_kv_caches
from maxcli.nn.attention_metadata import AttentionMetadata, attention_metadata
from maxcli.nn.fused_decode import decode_row_chunks
from maxcli.nn.lora import lora_rows

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
    lora_rows: torch.Tensor | None = None  # [T] LoRA slot of each packed token (-1: base); None: no adapter


@dataclass
class ModelOutputs:
    logits: torch.Tensor  # [B, V] float32: next-token logits of each sequence
    all_logits: torch.Tensor | None = None  # [T, V] when every token's logits were asked for


DEFAULT_CPU_KV_CACHE_BYTES = 2 << 30  # vLLM's CPU default is 4 GiB; 2 GiB holds ~45k SmolLM2 tokens in fp32


def kv_cache_pages(config: "PipelineConfig", bytes_per_page: int, max_seq_len: int, weights_bytes: int) -> int:
    """Pages for the KV cache: the explicit count, else a memory budget capped at a full batch of max_seq_len."""
    kv = config.kv_cache
    if kv.kv_cache_num_pages is not None:
        return kv.kv_cache_num_pages
    pages_per_seq = math.ceil(max_seq_len / kv.kv_cache_page_size)
    full_batch = pages_per_seq * config.max_batch_size
    if config.default_device_spec.device_type == "cpu":
        budget = int(DEFAULT_CPU_KV_CACHE_BYTES * kv.device_memory_utilization / 0.9)
    else:
        free, _ = torch.cuda.mem_get_info(config.device)
        budget = int(free * kv.device_memory_utilization) - weights_bytes
    return max(pages_per_seq, min(full_batch, budget // bytes_per_page))


def _config_int(config: Any, *names: str) -> int | None:
    for name in names:
        v = getattr(config, name, None)
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            return v
    return None


class PipelineModel(ABC):
    """The seeds' model contract: what a TextGenerationPipeline drives, for any architecture.

    The registry's loader builds every pipeline model the same way:
    `cls(pipeline_config, huggingface_config, weights, kv_manager, device, dtype, module_swap)`, where
    `weights` are the checkpoint's tensors after the architecture's weight adapter (lazy WeightData or
    tensors by name) and `kv_manager` is the PagedKVCacheManager sized from `get_kv_params`. The base
    constructor stores them and calls `load_model()`; a subclass builds its network there.

    Per step the pipeline calls `prepare_initial_token_inputs(contexts, kv_cache_inputs, return_n_logits)`
    with `kv_cache_inputs = kv_manager.fetch(contexts)` (token ids, positions, paged-attention metadata and
    the rows to sample), then `execute(inputs)`, which returns ModelOutputs whose `logits` has one row per
    sampled row (`kv_cache_inputs.attention.logits_indices`; every token when return_n_logits == -1, then
    in `all_logits`). Multi-step execution decodes the following steps through
    `prepare_next_token_inputs(next_tokens, prev_model_inputs)`.
    """

    def __init__(
        self,
        pipeline_config: "PipelineConfig",
        huggingface_config: Any,
        weights: Mapping[str, Any] | None = None,
        kv_manager: Any = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        module_swap: Callable[[torch.nn.Module, Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> None:
        self.pipeline_config = pipeline_config
        self.huggingface_config = huggingface_config
        self.weights = weights
        self.kv_manager = kv_manager
        self.device = torch.device(device if device is not None else "cpu")
        self.devices = [self.device]
        self.dtype = dtype
        self.encoding = getattr(pipeline_config, "quantization_encoding", None)
        self.module_swap = module_swap  # the loader's faster-layer swap; a model may ignore it
        self.model = self.load_model()
        self.weights = None  # loaded: the mapping (and its file views) can go

    # -- the seeds' contract ----------------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def calculate_max_seq_len(cls, pipeline_config: "PipelineConfig", huggingface_config: Any) -> int:
        """The longest sequence (prompt + output) this model serves under the config."""

    @abstractmethod
    def execute(self, model_inputs: ModelInputs) -> ModelOutputs:
        """One forward over prepared inputs."""

    @abstractmethod
    def prepare_initial_token_inputs(
        self, context_batch: Sequence["TextContext"], kv_cache_inputs: Any = None, return_n_logits: int = 1
    ) -> ModelInputs:
        """Inputs for a forward over each context's pending tokens (prefill, or a mixed batch)."""

    @abstractmethod
    def prepare_next_token_inputs(self, next_tokens: torch.Tensor, prev_model_inputs: ModelInputs) -> ModelInputs:
        """Inputs for the decode step after `prev_model_inputs`: one new token per sampled sequence."""

    def load_model(self) -> Any:
        """Build the network from `self.weights` (called once by the constructor); the default builds none."""
        return None

    # -- sizing (classmethods: the loader asks before any model exists) ---------------------------------

    @classmethod
    def get_num_layers(cls, huggingface_config: Any) -> int:
        n = _config_int(huggingface_config, "num_hidden_layers", "n_layer", "num_layers")
        if n is None:
            raise ValueError(f"{cls.__name__}: the model config gives no layer count; override get_num_layers")
        return n

    @classmethod
    def get_kv_params(
        cls, huggingface_config: Any, n_devices: int = 1, kv_cache_config: Any = None, cache_dtype: torch.dtype = torch.float32
    ) -> KVCacheParams:
        """KV-cache geometry: layers, KV heads, head size, page size, dtype, from the standard config
        fields (num_key_value_heads, num_attention_heads / n_head, head_dim or hidden_size / heads)."""
        heads = _config_int(huggingface_config, "num_attention_heads", "n_head")
        hidden = _config_int(huggingface_config, "hidden_size", "n_embd", "d_model")
        if heads is None or hidden is None:
            raise ValueError(f"{cls.__name__}: the model config gives no attention geometry; override get_kv_params")
        kv_heads = _config_int(huggingface_config, "num_key_value_heads") or heads
        head_dim = _config_int(huggingface_config, "head_dim") or hidden // heads
        page_size = getattr(kv_cache_config, "kv_cache_page_size", 16)
        return KVCacheParams(dtype=cache_dtype, num_layers=cls.get_num_layers(huggingface_config),
                             n_kv_heads=kv_heads, head_dim=head_dim, page_size=page_size)

    @classmethod
    def estimate_kv_cache_size(
        cls, pipeline_config: "PipelineConfig", huggingface_config: Any, weights_size: int = 0
    ) -> int:
        """Bytes the KV cache will take under the config (maxcli's page budget: kv_cache_pages)."""
        params = cls.get_kv_params(huggingface_config, 1, pipeline_config.kv_cache, getattr(torch, pipeline_config.cache_dtype))
        max_seq_len = cls.calculate_max_seq_len(pipeline_config, huggingface_config)
        return kv_cache_pages(pipeline_config, params.bytes_per_page, max_seq_len, weights_size) * params.bytes_per_page

    @classmethod
    def estimate_weights_size(cls, pipeline_config: "PipelineConfig") -> int:
        """Bytes of the weight files (PipelineConfig.weights_size); 0 when their sizes cannot be known."""
        try:
            return pipeline_config.weights_size()
        except ValueError:
            return 0


def hf_max_positions(huggingface_config: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        v = getattr(huggingface_config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return 2048


class TextGenerationModule(Protocol):
    """The module contract TorchTextGenerationModel drives (what an architecture's `module_class` is).

    Built as `module_class(hf_config, dtype)` on the target device; `kv_cache_shape(hf_config)` gives
    (layers, KV heads, head size) before any module exists; `load_weights(mapping)` takes HF-named tensors
    or lazy WeightData (what the module swap left); `forward(input_ids [T], positions [T]) -> hidden [T, H]`
    reads the AttentionMetadata set around it; `compute_logits(hidden [N, H]) -> float32 [N, vocab]`.
    Optional: `stacked_params` / `ignored_weights` (fused checkpoint tensors, entries that are no weights).
    """

    def __init__(self, config: Any, dtype: torch.dtype = torch.float32) -> None: ...

    @staticmethod
    def kv_cache_shape(config: Any) -> tuple[int, int, int]: ...

    def load_weights(self, weights: Mapping[str, Any]) -> None: ...

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor: ...

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...


class TorchTextGenerationModel(PipelineModel):
    """Runs an architecture's torch module (`module_class`, a TextGenerationModule) over the paged KV
    cache. Attention reads the AttentionMetadata set around each forward."""

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
        self.tp = current_group()  # this rank's tensor-parallel group (size 1 without TP)
        self.tp_runtime: Any = None  # rank 0 of a TP group: its workers (maxcli.distributed.launch)
        # Installed by the loader: (input_ids [B], positions [B]) -> final hidden [B, H] for a decode step
        # (one new token per sequence), or None for a step it does not cover (maxcli.nn.fused_decode).
        self.fused_decode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None
        self.lora: Any = None  # the loader's LoRAManager when LoRA is enabled (maxcli.lora)
        super().__init__(pipeline_config, huggingface_config, weights, kv_manager, device, dtype, module_swap)

    def load_model(self) -> torch.nn.Module:
        """The architecture's module, the swap applied, weights loaded, KV caches bound."""
        with torch.device(self.device):
            module = self.module_class(self.huggingface_config, self.dtype)
        weights = self.weights if self.weights is not None else {}
        if self.module_swap is not None:
            weights = self.module_swap(module, weights)
        module.load_weights(weights)
        self.module = module.eval()
        kv = self.kv_manager
        if kv is not None:
            bind_kv_caches(self.module, [kv.layer_caches(i) for i in range(kv.params.num_layers)])
        return self.module

    @classmethod
    def get_kv_params(
        cls, huggingface_config: Any, n_devices: int = 1, kv_cache_config: Any = None, cache_dtype: torch.dtype = torch.float32
    ) -> KVCacheParams:
        """The module's own KV geometry (module_class.kv_cache_shape), this rank's KV heads under TP."""
        num_layers, n_kv_heads, head_dim = cls.module_class.kv_cache_shape(huggingface_config)
        tp = current_group()
        if tp.is_parallel:
            n_kv_heads = tp.heads(huggingface_config.num_attention_heads, n_kv_heads)[3]
        return KVCacheParams(dtype=cache_dtype, num_layers=num_layers, n_kv_heads=n_kv_heads, head_dim=head_dim,
                             page_size=getattr(kv_cache_config, "kv_cache_page_size", 16))

    @classmethod
    def get_num_layers(cls, huggingface_config: Any) -> int:
        return cls.module_class.kv_cache_shape(huggingface_config)[0]

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
        self, context_batch: Sequence["TextContext"], kv_cache_inputs: Any = None, return_n_logits: int = 1
    ) -> ModelInputs:
        """Feed each context's next chunk (its scheduled tokens, else all not yet in the cache), as
        `kv_cache_inputs` (kv_manager.fetch) packed it; fetched here when not given."""
        step = kv_cache_inputs if kv_cache_inputs is not None else self.kv_manager.fetch(list(context_batch))
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
        step = build_next_decode_inputs(self.kv_manager, prev_model_inputs.attention,
                                        prev_model_inputs.request_ids, next_tokens)
        return ModelInputs(input_ids=step.input_ids, positions=step.positions, attention=step.attention,
                           request_ids=list(prev_model_inputs.request_ids))

    # -- forward ----------------------------------------------------------------------------------------

    def execute(self, model_inputs: ModelInputs) -> ModelOutputs:
        """One forward; with tensor parallelism rank 0 first broadcasts the step to the other ranks."""
        meta = model_inputs.attention
        rows = meta.logits_indices if meta.logits_indices is not None else (meta.cu_seqlens_q[1:] - 1).long()
        step = (model_inputs.input_ids, model_inputs.positions, meta, rows, model_inputs.return_n_logits,
                model_inputs.lora_rows)
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
        input_ids, positions, meta, rows, return_n_logits, adapter_rows = step
        with attention_metadata(meta), lora_rows(adapter_rows):
            hidden = None
            if self.fused_decode is not None and meta.max_seqlen_q == 1:
                hidden = self.fused_decode(input_ids, positions, adapter_rows)
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
