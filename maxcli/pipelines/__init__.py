"""`maxcli.pipelines` (mirrors `max.pipelines`): the registry, config and pipeline classes.

PIPELINE_REGISTRY registers the built-in architectures on first use. Heavy names (tokenizer,
pipelines, models) import on first use.
"""

from __future__ import annotations

from typing import Any

from maxcli.pipelines import lib as _lib
from maxcli.pipelines.lib import (  # noqa: F401
    PIPELINE_REGISTRY,
    ArchitectureNotFound,
    KVCacheConfig,
    KVCacheStrategy,
    PipelineConfig,
    PipelineEngine,
    PipelineRegistry,
    RepoType,
    RopeType,
    SupportedArchitecture,
    SupportedEncoding,
    WeightsFormat,
    get_pipeline_for_task,
)


def __getattr__(name: str) -> Any:
    return _lib.__getattr__(name)


__all__ = list(_lib.__all__)
