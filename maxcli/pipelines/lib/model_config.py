"""`maxcli.pipelines.lib.model_config` (mirrors `max.pipelines.lib.model_config`)."""

from maxcli.config.model_config import MAXModelConfig, MAXModelConfigBase

__all__ = ["MAXModelConfig", "MAXModelConfigBase"]
