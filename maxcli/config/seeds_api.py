"""The seeds' PipelineConfig methods and the older config page's names (max.pipelines.config), as a mixin
of maxcli's PipelineConfig: reads of its fields under MAX's names, and the repo / weight-file helpers.
No field lives here; PipelineConfig's before-validator maps the older names on construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from maxcli.config.model_config import MAXModelConfig
from maxcli.config.yaml_file import ConfigError


class SeedsConfigMethods:
    """Mixed into PipelineConfig (a pydantic model): every attribute used here is one of its fields. No
    annotations here: pydantic would take them for fields."""

    # -- the older MAX config page (max.pipelines.config.PipelineConfig) --------------------------------

    @property
    def huggingface_repo_id(self) -> str:
        return self.model_path

    @property
    def max_cache_batch_size(self) -> int:
        return self.max_batch_size

    @property
    def cache_strategy(self) -> Any:
        return self.kv_cache.cache_strategy

    @property
    def kv_cache_page_size(self) -> int:
        return self.kv_cache.kv_cache_page_size

    @property
    def enable_prefix_caching(self) -> bool:
        return self.kv_cache.enable_prefix_caching

    @property
    def gpu_memory_utilization(self) -> float:
        return self.kv_cache.device_memory_utilization

    @property
    def top_k(self) -> int | None:
        return None if self.sampling.top_k in (-1, 0) else self.sampling.top_k

    @property
    def devices(self) -> list[Any]:
        """torch devices of device_specs."""
        return [spec.torch_device for spec in self.device_specs]

    @property
    def dtype(self) -> Any:
        """Compute dtype of the weight encoding (float32 when none is resolved yet)."""
        import torch

        return self.quantization_encoding.dtype if self.quantization_encoding else torch.float32

    @property
    def short_name(self) -> str:
        """The model's last path component (repo name or file stem)."""
        name = self.model_path.rstrip("/").rsplit("/", 1)[-1]
        return name.removesuffix(".gguf")

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each field's help text, by field name."""
        return {name: f.description or "" for name, f in cls.model_fields.items()}

    def huggingface_weights_repo(self) -> Any:
        """The repo the weight files come from (the model repo; weight_path files are local)."""
        return self.model.huggingface_weight_repo

    @property
    def huggingface_config(self) -> Any:
        """The model's config (config.json, or GGUF metadata turned into the same fields)."""
        return self.model.huggingface_config

    def _weight_files(self) -> list[Path]:
        """Local weight files: weight_path, else the repo's files for the encoding (downloaded)."""
        if self.weight_path:
            return [Path(p) for p in self.weight_path]
        from maxcli.pipelines.lib.hf_repo import resolve_encoding_and_weights

        repo = self.huggingface_weights_repo()
        encodings = {e: [] for e in repo.supported_encodings}
        if not encodings:
            raise ConfigError(f"{self.model_path}: no weight files found")
        default = self.quantization_encoding or next(iter(encodings))
        _, paths = resolve_encoding_and_weights(repo, self.quantization_encoding, [], default, encodings,
                                                self.allow_safetensors_weights_fp32_bf6_bidirectional_cast)
        return [p if p.exists() else repo.download(str(p), force_download=self.force_download) for p in paths]

    def download_weights(self) -> None:
        """Fetch the weight files into the local cache (nothing to do for local files)."""
        self._weight_files()

    def load_weights(self) -> Any:
        """The weight files, memory-mapped (maxcli.weights.Weights: lazy tensors by checkpoint name)."""
        from maxcli.weights import load_weights

        return load_weights(self._weight_files())

    @property
    def weights_format(self) -> Any:
        """The format of the weight files (gguf, safetensors or pytorch)."""
        from maxcli.config.enums import WeightsFormat

        named = WeightsFormat.of_file((list(self.weight_path) or [self.model_path])[0])
        if named is not None:
            return named
        formats = self.huggingface_weights_repo().formats_available
        if len(formats) != 1:
            raise ConfigError(f"{self.model_path}: weights in {', '.join(map(str, formats)) or 'no'} format(s); name one with weight_path")
        return formats[0]

    def weights_size(self) -> int:
        """Bytes of the weight files (local files, the HF cache, or the hub's metadata: nothing downloaded)."""
        return self.model.weights_size()

    def update_architecture(self) -> None:
        """Set `architecture` from the model config's architectures[0] when it is not set."""
        if self.architecture is None:
            names = getattr(self.huggingface_config, "architectures", None) or []
            if not names:
                raise ConfigError(f"{self.model_path}: the model config names no architecture")
            self.architecture = names[0]

    @property
    def model(self) -> Any:
        """The model section as the newer MAX API spells it (maxcli.pipelines.lib.model_config.MAXModelConfig)."""
        shared = [k for k in MAXModelConfig.model_fields
                  if k in type(self).model_fields and k not in ("config_file", "section_name")]  # already merged
        return MAXModelConfig(**{k: getattr(self, k) for k in shared})
