"""Enumerations shared by config, registry, weights and the CLI (values as in MAX)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


class _StrEnum(str, enum.Enum):
    def __str__(self) -> str:
        return self.value


class SupportedEncoding(_StrEnum):
    """How weights are stored. Quantized GGUF encodings keep their blocks; float ones are dtypes."""

    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"
    q4_0 = "q4_0"
    q4_1 = "q4_1"
    q5_0 = "q5_0"
    q8_0 = "q8_0"
    q4_k = "q4_k"
    q5_k = "q5_k"
    q6_k = "q6_k"
    float8_e4m3fn = "float8_e4m3fn"
    float4_e2m1fnx2 = "float4_e2m1fnx2"
    gptq = "gptq"

    @property
    def is_quantized(self) -> bool:
        return self not in (SupportedEncoding.float32, SupportedEncoding.bfloat16, SupportedEncoding.float16)

    @property
    def is_gguf(self) -> bool:
        """A GGUF block-quantized encoding (q4_0, q4_k, ...)."""
        return self.value[0] == "q"

    @property
    def dtype_name(self) -> str:
        """Name of the activation/compute dtype that goes with the encoding (no torch import)."""
        if self in (SupportedEncoding.float16,):
            return "float16"
        if self in (
            SupportedEncoding.bfloat16,
            SupportedEncoding.float8_e4m3fn,
            SupportedEncoding.float4_e2m1fnx2,
            SupportedEncoding.gptq,
        ):
            return "bfloat16"
        return "float32"

    @property
    def dtype(self) -> "torch.dtype":
        """Activation/compute dtype that goes with the encoding."""
        import torch

        return getattr(torch, self.dtype_name)

    @property
    def cache_dtype(self) -> "torch.dtype":
        """KV-cache dtype derived from the encoding (the seeds' set_cache_dtype_given_quantization_encoding)."""
        return self.dtype

    @property
    def quantization_encoding(self) -> Any:
        """The GGML block type of a GGUF encoding (gguf.GGMLQuantizationType), None for float encodings."""
        if not self.is_gguf:
            return None
        from gguf import GGMLQuantizationType

        return GGMLQuantizationType[self.value.upper()]

    @classmethod
    def parse_from_file_name(cls, name: str) -> "SupportedEncoding | None":
        low = name.lower()
        for enc in sorted(cls, key=lambda e: -len(e.value)):
            tag = enc.value.replace("_", "")
            if enc.value in low or (enc.is_quantized and tag in low.replace("_", "").replace("-", "")):
                return enc
        if "f32" in low or "fp32" in low:
            return cls.float32
        if "bf16" in low:
            return cls.bfloat16
        if "f16" in low or "fp16" in low:
            return cls.float16
        return None


class WeightsFormat(_StrEnum):
    safetensors = "safetensors"
    gguf = "gguf"
    pytorch = "pytorch"

    @classmethod
    def of_file(cls, path: Any) -> "WeightsFormat | None":
        """The format a weight file's name says (.gguf, .safetensors, .bin/.pt/.pth), None for others."""
        name = str(path).lower()
        if name.endswith(".gguf"):
            return cls.gguf
        if name.endswith((".safetensors", ".safetensors.index.json")):
            return cls.safetensors
        if name.endswith((".bin", ".pt", ".pth")):
            return cls.pytorch
        return None


class RopeType(_StrEnum):
    none = "none"
    normal = "normal"
    neox = "neox"
    longrope = "longrope"
    yarn = "yarn"


class KVCacheStrategy(_StrEnum):
    MODEL_DEFAULT = "model_default"
    PAGED = "paged"

    # Lower-case aliases so `KVCacheStrategy.paged` works as well as MAX's `KVCacheStrategy.PAGED`; the
    # older MAX strategies ("continuous", "naive") name the one cache maxcli has, the paged one.
    @classmethod
    def _missing_(cls, value: object) -> "KVCacheStrategy | None":
        if isinstance(value, str):
            if value.lower() in ("continuous", "naive"):
                return cls.PAGED
            for m in cls:
                if m.value == value.lower():
                    return m
        return None


class PipelineEngine(_StrEnum):
    MAX = "max"
    HUGGINGFACE = "huggingface"


class RepoType(_StrEnum):
    local = "local"
    online = "online"
