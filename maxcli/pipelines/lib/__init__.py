"""The pipelines API (mirrors `max.pipelines.lib`). Heavy names import on first use."""

from __future__ import annotations

import importlib
from typing import Any

from maxcli.config import (
    KVCacheConfig,
    KVCacheStrategy,
    PipelineConfig,
    PipelineEngine,
    RepoType,
    RopeType,
    SupportedEncoding,
    WeightsFormat,
)
from maxcli.pipelines.lib.registry import PIPELINE_REGISTRY, PipelineRegistry, get_pipeline_for_task
from maxcli.pipelines.lib.supported_architecture import ArchitectureNotFound, SupportedArchitecture

_LAZY = {
    "TextTokenizer": "maxcli.pipelines.lib.tokenizer",
    "HuggingFaceRepo": "maxcli.pipelines.lib.hf_repo",
    "PipelineModel": "maxcli.pipelines.lib.pipeline_model",
    "TorchTextGenerationModel": "maxcli.pipelines.lib.pipeline_model",
    "ModelInputs": "maxcli.pipelines.lib.pipeline_model",
    "ModelOutputs": "maxcli.pipelines.lib.pipeline_model",
    "TextGenerationPipeline": "maxcli.pipelines.lib.text_generation",
    "EmbeddingsPipeline": "maxcli.pipelines.lib.embeddings",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'maxcli.pipelines.lib' has no attribute {name!r}")


__all__ = [
    "PIPELINE_REGISTRY",
    "ArchitectureNotFound",
    "KVCacheConfig",
    "KVCacheStrategy",
    "PipelineConfig",
    "PipelineEngine",
    "PipelineRegistry",
    "RepoType",
    "RopeType",
    "SupportedArchitecture",
    "SupportedEncoding",
    "WeightsFormat",
    "get_pipeline_for_task",
    *_LAZY,
]
