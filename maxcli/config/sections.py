"""Config sections nested in PipelineConfig. Each field's description is its CLI help text."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from maxcli.config.enums import KVCacheStrategy

_STRICT = ConfigDict(extra="forbid", validate_assignment=True, use_enum_values=False)


class KVCacheConfig(BaseModel):
    model_config = _STRICT

    cache_strategy: KVCacheStrategy = Field(
        KVCacheStrategy.PAGED, description="KV cache strategy: paged (model_default resolves to paged)."
    )
    kv_cache_page_size: int = Field(16, ge=1, le=4096, description="Tokens per page of the paged KV cache.")
    enable_prefix_caching: bool = Field(
        True, description="Share KV pages between requests with a common prompt prefix."
    )
    device_memory_utilization: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Fraction of free device memory (on CPU: of available RAM) the weights and KV cache may use.",
    )
    kv_cache_num_pages: Optional[int] = Field(
        None, ge=1, description="Exact number of KV pages (overrides device-memory-utilization)."
    )
    cache_dtype: Optional[Literal["float32", "bfloat16", "float16"]] = Field(
        None, description="KV cache dtype; derived from the weight encoding when unset."
    )


class SamplingDefaults(BaseModel):
    """Defaults for requests that do not set their own sampling values."""

    model_config = _STRICT

    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature; 0 means greedy.")
    top_k: int = Field(-1, ge=-1, description="Sample among the K most likely tokens (-1: off).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: smallest set with this probability mass.")
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="Drop tokens below min-p times the top probability.")
    repetition_penalty: float = Field(1.0, gt=0.0, description="Penalty (>1) on tokens already in prompt or output.")
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="Penalty per occurrence in the output.")
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0, description="Penalty on tokens present in the output.")
    seed: Optional[int] = Field(None, description="Random seed: the same seed gives the same text.")
    min_tokens: int = Field(0, ge=0, description="Generate at least this many tokens before stopping.")
    ignore_eos: bool = Field(False, description="Keep generating past the end-of-sequence token.")
    stop: list[str] = Field(default_factory=list, description="Stop when this string appears (repeatable).")
    stop_token_ids: list[int] = Field(default_factory=list, description="Stop on this token id (repeatable).")

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, v: list[str]) -> list[str]:
        if any(s == "" for s in v):
            raise ValueError("stop strings must not be empty")
        return v


class SpeculativeConfig(BaseModel):
    """Speculative decoding: draft a few tokens cheaply, check them all in one forward of the model."""

    model_config = _STRICT

    speculative_method: Optional[Literal["ngram", "standalone"]] = Field(
        None,
        description="Draft tokens by n-gram lookup in the prompt and output (ngram) or with a small draft model "
        "(standalone); unset: off.",
    )
    num_speculative_tokens: int = Field(
        3, ge=1, le=16,
        description="Tokens drafted per step and request (3: the last token and 3 drafts fill one 4-row tile of the CPU kernels).",
    )
    draft_model: Optional[str] = Field(
        None, description="Draft model for --speculative-method standalone (shares the target's vocabulary)."
    )
    ngram_prompt_lookup_min: int = Field(2, ge=1, le=16, description="Shortest n-gram matched for ngram drafting.")
    ngram_prompt_lookup_max: int = Field(4, ge=1, le=16, description="Longest n-gram matched for ngram drafting.")

    @model_validator(mode="after")
    def _consistent(self) -> "SpeculativeConfig":
        if self.ngram_prompt_lookup_min > self.ngram_prompt_lookup_max:
            raise ValueError(f"ngram_prompt_lookup_min ({self.ngram_prompt_lookup_min}) exceeds ngram_prompt_lookup_max "
                             f"({self.ngram_prompt_lookup_max})")
        if self.speculative_method == "standalone" and not self.draft_model:
            raise ValueError("speculative_method standalone needs draft_model")
        if self.draft_model and self.speculative_method != "standalone":
            raise ValueError("draft_model is only used with speculative_method standalone")
        return self


class LoRAConfig(BaseModel):
    """LoRA adapters (PEFT folders) served beside the base model; a request picks one by name."""

    model_config = _STRICT

    enable_lora: bool = Field(False, description="Serve LoRA adapters beside the base model.")
    lora_paths: list[str] = Field(
        default_factory=list,
        description="Adapter to serve, as NAME=PATH (a PEFT folder or hub repo; repeatable).",
    )
    max_lora_rank: int = Field(16, ge=1, le=512, description="Largest adapter rank accepted.")
    max_num_loras: int = Field(
        4, ge=1, le=64,
        description="Adapters resident at once (one batch step serves at most this many); others load on demand, "
        "the least recently used evicted.",
    )

    @field_validator("lora_paths")
    @classmethod
    def _named(cls, v: list[str]) -> list[str]:
        names = []
        for item in v:
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise ValueError(f"lora_paths entries are NAME=PATH, got {item!r}")
            names.append(name.strip())
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"lora_paths names {dup[0]!r} twice")
        return v

    @model_validator(mode="after")
    def _enabled(self) -> "LoRAConfig":
        if self.lora_paths and not self.enable_lora:
            raise ValueError("lora_paths needs enable_lora")
        return self

    @property
    def adapters(self) -> dict[str, str]:
        """lora_paths as name -> path, in the order given."""
        return {n.strip(): p.strip() for n, _, p in (item.partition("=") for item in self.lora_paths)}
