"""Configuration: PipelineConfig, its sections, enums, and YAML loading."""

from maxcli.config.enums import (
    KVCacheStrategy,
    PipelineEngine,
    RepoType,
    RopeType,
    SupportedEncoding,
    WeightsFormat,
)
from maxcli.config.pipeline_config import DEFAULT_MODEL, ConfigError, PipelineConfig, load_yaml_section
from maxcli.config.sections import KVCacheConfig, LoRAConfig, SamplingDefaults, SpeculativeConfig

__all__ = [
    "DEFAULT_MODEL",
    "ConfigError",
    "KVCacheConfig",
    "KVCacheStrategy",
    "LoRAConfig",
    "PipelineConfig",
    "PipelineEngine",
    "RepoType",
    "RopeType",
    "SamplingDefaults",
    "SpeculativeConfig",
    "SupportedEncoding",
    "WeightsFormat",
    "load_yaml_section",
]
