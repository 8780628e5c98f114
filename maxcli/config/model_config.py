"""MAXModelConfig: the model section of a pipeline config (mirrors `max.pipelines.lib.model_config`).

maxcli's PipelineConfig keeps these fields flat (with the flags generated from them); this class is the
seeds' view of them, usable on its own (from keywords or a YAML `config_file`) and as
`PipelineConfig.model`. Settings that belong to MAX's graph compiler fail with a one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from maxcli.config.enums import KVCacheStrategy, RopeType, SupportedEncoding, WeightsFormat
from maxcli.config.sections import KVCacheConfig
from maxcli.config.yaml_file import ConfigError, load_yaml_section
from maxcli.driver import DeviceSpec, parse_device_specs


def check_max_length(v: Optional[int]) -> Optional[int]:
    """max_length must be non-negative when given."""
    if v is not None and v < 0:
        raise ValueError(f"max_length must be non-negative, got {v}")
    return v


def coerce_device_specs(v: Any) -> Any:
    """`cpu` / `gpu:0,1` strings (or a list of them) -> DeviceSpecs; anything else is left to pydantic."""
    if isinstance(v, str):
        return parse_device_specs(v)
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return [spec for x in v for spec in parse_device_specs(x)]
    return v


class ConfigFileModel(BaseModel):
    """A config whose values may come from a YAML file: `config_file` (and `section_name`) are read at
    construction, explicit keywords win over the file."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", strict=False)

    config_file: Optional[str] = None
    section_name: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _read_config_file(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("config_file"):
            return {**load_yaml_section(data["config_file"], data.get("section_name")), **data}
        return data


class MAXModelConfigBase(ConfigFileModel):
    """Base of the model configs (the seeds' MAXModelConfigBase)."""


class MAXModelConfig(MAXModelConfigBase):
    use_subgraphs: bool = True
    data_parallel_degree: int = Field(1, ge=1)
    max_length: Optional[int] = None
    model_path: str = ""
    served_model_name: Optional[str] = None
    weight_path: list[Path] = Field(default_factory=list)
    quantization_encoding: Optional[SupportedEncoding] = None
    allow_safetensors_weights_fp32_bf6_bidirectional_cast: bool = False
    huggingface_model_revision: str = "main"
    huggingface_weight_revision: str = "main"
    trust_remote_code: bool = False
    device_specs: list[DeviceSpec] = Field(default_factory=lambda: [DeviceSpec.cpu()])
    force_download: bool = False
    vision_config_overrides: dict[str, Any] = Field(default_factory=dict)
    rope_type: Optional[RopeType] = None
    kv_cache: KVCacheConfig = Field(default_factory=KVCacheConfig)

    _huggingface_config: Any = PrivateAttr(default=None)
    _generation_config: Any = PrivateAttr(default=None)

    @field_validator("max_length")
    @classmethod
    def validate_max_length(cls, v: Optional[int]) -> Optional[int]:
        """max_length must be non-negative when given."""
        return check_max_length(v)

    @field_validator("device_specs", mode="before")
    @classmethod
    def _parse_devices(cls, v: Any) -> Any:
        return coerce_device_specs(v)

    @field_validator("use_subgraphs")
    @classmethod
    def _subgraphs(cls, v: bool) -> bool:
        if not v:
            raise ValueError("use_subgraphs: a MAX graph-compiler setting; maxcli runs torch modules (no subgraphs to turn off)")
        return v

    @field_validator("vision_config_overrides")
    @classmethod
    def _vision(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v:
            raise ValueError("vision_config_overrides: maxcli's native models are text-only")
        return v

    def model_post_init(self, context: Any, /) -> None:  # pydantic's hook: private state starts empty
        self._huggingface_config = None
        self._generation_config = None

    # -- repos and configs ------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model_path

    @property
    def default_device_spec(self) -> DeviceSpec:
        return self.device_specs[0]

    @property
    def huggingface_model_repo(self) -> Any:
        from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo

        return HuggingFaceRepo(repo_id=self.model_path, revision=self.huggingface_model_revision,
                               trust_remote_code=self.trust_remote_code)

    @property
    def huggingface_weight_repo_id(self) -> str:
        return self.model_path

    @property
    def huggingface_weight_repo(self) -> Any:
        from maxcli.pipelines.lib.hf_repo import HuggingFaceRepo

        return HuggingFaceRepo(repo_id=self.huggingface_weight_repo_id, revision=self.huggingface_weight_revision,
                               trust_remote_code=self.trust_remote_code)

    @property
    def huggingface_config(self) -> Any:
        """The model's config, loaded on first access."""
        if self._huggingface_config is None:
            from maxcli.pipelines.lib.hf_config import load_pretrained_config

            self._huggingface_config = load_pretrained_config(self.huggingface_model_repo)
        return self._huggingface_config

    @property
    def diffusers_config(self) -> dict[str, Any] | None:
        """model_index.json of a diffusion pipeline repo; None for every other repo."""
        import json

        repo = self.huggingface_model_repo
        if not repo.file_exists("model_index.json"):
            return None
        return json.loads(repo.download("model_index.json").read_text())

    @property
    def generation_config(self) -> Any:
        """transformers' GenerationConfig of the model (its defaults when the repo has none)."""
        if self._generation_config is None:
            from transformers import GenerationConfig

            try:
                repo = self.huggingface_model_repo
                self._generation_config = GenerationConfig.from_pretrained(
                    str(repo._root()) if Path(self.model_path).exists() else self.model_path,
                    revision=self.huggingface_model_revision)
            except Exception:  # noqa: BLE001 - no generation_config.json: the documented default
                self._generation_config = GenerationConfig()
        return self._generation_config

    @property
    def sampling_params_defaults(self) -> dict[str, Any]:
        """Sampling defaults the generation config sets (temperature, top_k, top_p, repetition_penalty, ...)."""
        gc = self.generation_config
        names = {"temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
                 "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_new_tokens"}
        out = {ours: getattr(gc, theirs) for ours, theirs in names.items() if getattr(gc, theirs, None) is not None}
        if getattr(gc, "do_sample", None) is False:
            out["temperature"] = 0.0
        return out

    @property
    def graph_quantization_encoding(self) -> Any:
        """The GGML block type of the encoding (None for float encodings); ValueError without an encoding."""
        if self.quantization_encoding is None:
            raise ValueError("graph_quantization_encoding: no quantization_encoding is set")
        return self.quantization_encoding.quantization_encoding

    # -- resolution -------------------------------------------------------------------------------------

    def create_kv_cache_config(self, **kv_cache_kwargs: Any) -> None:
        """Set kv_cache from keywords, the cache dtype following the encoding unless given."""
        kv = KVCacheConfig(**kv_cache_kwargs)
        self.kv_cache = kv
        if kv.cache_dtype is None:
            self.kv_cache = kv.model_copy(update={"cache_dtype": str(self.set_cache_dtype_given_quantization_encoding()).removeprefix("torch.")})

    def set_cache_dtype_given_quantization_encoding(self) -> Any:
        """The KV-cache dtype: kv_cache.cache_dtype when set, else the encoding's, else float32."""
        import torch

        if self.kv_cache.cache_dtype is not None:
            return getattr(torch, self.kv_cache.cache_dtype)
        return self.quantization_encoding.cache_dtype if self.quantization_encoding else torch.float32

    def resolve(self) -> None:
        """Check that every requested GPU exists (a one-line ConfigError otherwise)."""
        wanted = [d.id for d in self.device_specs if d.device_type == "gpu"]
        if wanted:
            from maxcli.driver import accelerator_count

            have = accelerator_count()
            missing = [i for i in wanted if i >= have]
            if missing:
                raise ConfigError(f"devices: gpu:{missing[0]} requested but {have} CUDA device(s) are available")

    def validate_and_resolve_quantization_encoding_weight_path(self, default_encoding: SupportedEncoding) -> None:
        """Pick the encoding from the weight files when unset (else `default_encoding`); a weight file whose
        encoding differs from the one asked for is an error."""
        repo = self.huggingface_weight_repo
        found = [repo.encoding_for_file(p) for p in self.weight_path] if self.weight_path else []
        if self.quantization_encoding is None:
            self.quantization_encoding = found[0] if found else SupportedEncoding(default_encoding)
        elif found and found[0] is not self.quantization_encoding and not self.allow_safetensors_weights_fp32_bf6_bidirectional_cast:
            raise ValueError(f"weight_path {self.weight_path[0]} holds {found[0]} weights, not {self.quantization_encoding}")

    def validate_and_resolve_rope_type(self, arch_rope_type: RopeType) -> None:
        if self.rope_type is None:
            self.rope_type = RopeType(arch_rope_type)

    def validate_and_resolve_with_resolved_quantization_encoding(
        self, supported_encodings: dict[SupportedEncoding, list[KVCacheStrategy]], default_weights_format: WeightsFormat
    ) -> None:
        """The resolved encoding must be one the architecture supports, with this KV-cache strategy."""
        enc = self.quantization_encoding
        supported = {SupportedEncoding(e): [KVCacheStrategy(s) for s in ss] for e, ss in supported_encodings.items()}
        if enc is None or enc not in supported:
            raise ValueError(f"encoding {enc} is not supported (supported: {', '.join(map(str, supported))})")
        strategies = supported[enc]
        if self.kv_cache.cache_strategy not in strategies and KVCacheStrategy.MODEL_DEFAULT not in strategies:
            self.kv_cache = self.kv_cache.model_copy(update={"cache_strategy": strategies[0]})

    def validate_lora_compatibility(self) -> None:
        """LoRA settings against the model settings. maxcli keeps the LoRA settings in PipelineConfig's lora
        section (PipelineConfig.validate_lora_compatibility checks them); this section has none of its own."""

    def validate_multi_gpu_supported(self, multi_gpu_supported: bool) -> None:
        if not multi_gpu_supported and len(self.device_specs) > 1 and self.data_parallel_degree == 1:
            raise ValueError(f"the architecture does not support multiple devices ({len(self.device_specs)} given)")

    def weights_size(self) -> int:
        """Bytes of the weight files: local weight_path files, else the repo's sizes (cache or hub)."""
        if self.weight_path and all(Path(p).is_file() for p in self.weight_path):
            return sum(Path(p).stat().st_size for p in self.weight_path)
        repo = self.huggingface_weight_repo
        names = [str(p) for p in self.weight_path] or [f for fs in repo.weight_files.values() for f in fs]
        sizes = [repo.size_of(n) for n in names]
        if any(s is None for s in sizes):
            raise ValueError(f"{self.model_path}: cannot determine the size of every weight file")
        return sum(s for s in sizes if s is not None)
