"""SupportedArchitecture: how one model architecture is loaded, configured and executed (mirrors
`max.pipelines.lib.registry.SupportedArchitecture`). A plain record; the registry holds them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from maxcli.config.enums import KVCacheStrategy, RopeType, SupportedEncoding, WeightsFormat
from maxcli.interfaces import PipelineTask
from maxcli.pipelines.core import EmbeddingsContext, TextContext


class ArchitectureNotFound(ValueError):
    """No registered architecture matches the model."""


class _Required:
    """Marks a field the seeds list without a default: it must be given (checked in __post_init__)."""

    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Any = _Required()


@dataclass
class SupportedArchitecture:
    """The seeds' fields, in the seeds' order. `example_repo_ids` may be left out (the guide's own
    example does); every other field without a default in the seeds must be given."""

    name: str
    example_repo_ids: list[str] = field(default_factory=list)
    default_encoding: SupportedEncoding = REQUIRED
    supported_encodings: dict[SupportedEncoding, list[KVCacheStrategy]] = REQUIRED
    pipeline_model: type = REQUIRED
    task: PipelineTask = REQUIRED
    tokenizer: Callable[..., Any] = REQUIRED
    default_weights_format: WeightsFormat = REQUIRED
    context_type: type | None = None
    config: type | None = None
    rope_type: RopeType = RopeType.none
    weight_adapters: dict[WeightsFormat, Callable[..., dict[str, Any]]] = field(default_factory=dict)
    multi_gpu_supported: bool = False
    required_arguments: dict[str, Any] = field(default_factory=dict)
    context_validators: list[Callable[[Any], None]] = field(default_factory=list)
    supports_empty_batches: bool = False
    requires_max_batch_context_length: bool = False

    def __post_init__(self) -> None:
        missing = [f for f in ("default_encoding", "supported_encodings", "pipeline_model", "task", "tokenizer",
                               "default_weights_format") if getattr(self, f) is REQUIRED]
        if missing:
            raise TypeError(f"SupportedArchitecture {self.name!r}: missing required field(s) {', '.join(missing)}")
        try:
            self.default_encoding = SupportedEncoding(self.default_encoding)
            self.supported_encodings = {
                SupportedEncoding(e): [KVCacheStrategy(s) for s in strategies]
                for e, strategies in self.supported_encodings.items()
            }
            self.task = PipelineTask(self.task)
            self.default_weights_format = WeightsFormat(self.default_weights_format)
            self.rope_type = RopeType(self.rope_type)
            self.weight_adapters = {WeightsFormat(f): fn for f, fn in self.weight_adapters.items()}
        except ValueError as e:
            raise ValueError(f"SupportedArchitecture {self.name!r}: {e}") from None
        if self.context_type is None:
            self.context_type = (
                EmbeddingsContext if self.task is PipelineTask.EMBEDDINGS_GENERATION else TextContext
            )
        if self.default_encoding not in self.supported_encodings:
            raise ValueError(f"{self.name}: default_encoding {self.default_encoding} is not in supported_encodings")
        bad = [v for v in self.context_validators if not callable(v)]
        if bad:
            raise TypeError(f"SupportedArchitecture {self.name!r}: context_validators must be callables, got {bad[0]!r}")

    @property
    def tokenizer_cls(self) -> type:
        tok = self.tokenizer
        return tok if isinstance(tok, type) else type(tok)

    def describe(self) -> dict[str, Any]:
        """MAX's `list --json` shape for one architecture."""
        return {
            "task": str(self.task),
            "example_repo_ids": list(self.example_repo_ids),
            "default_encoding": str(self.default_encoding),
            "supported_encodings": {str(e): [str(s) for s in ss] for e, ss in self.supported_encodings.items()},
            "default_weights_format": str(self.default_weights_format),
            "weight_formats": sorted({str(self.default_weights_format), *(str(f) for f in self.weight_adapters)}),
            "rope_type": str(self.rope_type),
            "multi_gpu_supported": self.multi_gpu_supported,
        }
