"""`maxcli.pipelines.config` (mirrors the older `max.pipelines.config` page): the same PipelineConfig, which
also takes that page's spellings (huggingface_repo_id, max_cache_batch_size, ...), and its companions."""

from maxcli.config import PipelineConfig, PipelineEngine, RepoType, RopeType, SupportedEncoding, WeightsFormat
from maxcli.config.enums import KVCacheStrategy
from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo

__all__ = ["HuggingFaceRepo", "KVCacheStrategy", "PipelineConfig", "PipelineEngine", "RepoType", "RopeType",
           "SupportedEncoding", "WeightsFormat"]
