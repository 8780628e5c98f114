"""Lazy weights: a `WeightData` reads nothing from disk until `to_tensor()` / `raw_blocks()` is called."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

import torch
from gguf import GGMLQuantizationType

from maxcli.weights.dequant import block_layout, dequantize


class WeightsError(ValueError):
    """A weight file that cannot be read (missing, truncated, corrupt, unsupported)."""


_GGUF_FLOAT_TYPES = {
    GGMLQuantizationType.F32: torch.float32,
    GGMLQuantizationType.F16: torch.float16,
    GGMLQuantizationType.BF16: torch.bfloat16,
}


@dataclass(frozen=True, eq=False)
class WeightData:
    """One tensor of a checkpoint.

    `shape` is in torch order ((out_features, in_features) for matrices). `qtype` is the GGML type for a
    GGUF tensor and None for safetensors. `_load` returns, when called, either the raw row bytes
    (uint8 [rows, bytes_per_row], GGUF) or the stored tensor (safetensors). Transforms recorded here
    (row permutation, additive offset) are applied on load, in that order.
    """

    name: str
    shape: tuple[int, ...]
    qtype: GGMLQuantizationType | None
    nbytes: int
    _load: Callable[[], torch.Tensor]
    stored_dtype: torch.dtype | None = None  # safetensors dtype; None for GGUF
    _row_perm: torch.Tensor | None = None
    _offset: float = 0.0
    source: str = ""  # file the tensor lives in, for error messages

    @property
    def is_quantized(self) -> bool:
        """A GGUF block-quantized tensor (not F32/F16/BF16)."""
        return self.qtype is not None and self.qtype not in _GGUF_FLOAT_TYPES

    @property
    def dtype(self) -> torch.dtype | None:
        """The stored torch dtype, or None for block-quantized data."""
        if self.qtype is None:
            return self.stored_dtype
        return _GGUF_FLOAT_TYPES.get(self.qtype)

    def raw_blocks(self) -> torch.Tensor:
        """GGUF bytes as uint8 [rows, bytes_per_row] (rows = all dims but the last), row-permuted."""
        if self.qtype is None:
            raise WeightsError(f"{self.name}: raw blocks exist only for GGUF tensors")
        if self._offset:
            raise WeightsError(f"{self.name}: raw blocks of an offset-adjusted tensor are not stored bytes")
        raw = self._load()
        if self._row_perm is not None:
            if len(self.shape) < 2:
                raise WeightsError(f"{self.name}: cannot permute the raw bytes of a 1-D tensor")
            raw = raw.view(self.shape[0], -1)[self._row_perm].view(raw.shape[0], -1)
        return raw

    def to_tensor(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Read (and dequantize) the tensor into memory; cost O(numel) reads and one float32 pass."""
        if self.qtype is None:
            out = self._load()
            if self._row_perm is None and not self._offset:
                return out.to(dtype)
            out = out.float()
        else:
            bs, _ = block_layout(self.qtype)
            if self.shape and self.shape[-1] % bs:
                raise WeightsError(f"{self.name}: row length {self.shape[-1]} is not a multiple of {bs}")
            out = dequantize(self._load(), self.qtype).reshape(self.shape)
            if not bool(torch.isfinite(out).all()):
                raise WeightsError(f"{self.name}: non-finite values in its {self.qtype.name} blocks (corrupt file {self.source})")
        if self._row_perm is not None:
            out = out[self._row_perm]
        if self._offset:
            out = out + self._offset
        return out.to(dtype)

    def permute_rows(self, perm: torch.Tensor) -> "WeightData":
        """A new lazy WeightData whose row i is this one's row perm[i] (composes with earlier permutations)."""
        perm = torch.as_tensor(perm, dtype=torch.long)
        if not self.shape or perm.shape != (self.shape[0],):
            raise ValueError(f"{self.name}: permutation of length {perm.numel()} does not fit shape {self.shape}")
        if not torch.equal(perm.sort().values, torch.arange(self.shape[0])):
            raise ValueError(f"{self.name}: not a permutation of 0..{self.shape[0] - 1}")
        composed = perm if self._row_perm is None else self._row_perm[perm]
        return replace(self, _row_perm=composed)

    def plus(self, offset: float) -> "WeightData":
        """A new lazy WeightData whose values are these values + offset (computed in float32)."""
        return replace(self, _offset=self._offset + offset)

    def renamed(self, name: str) -> "WeightData":
        return replace(self, name=name)

    def __repr__(self) -> str:
        kind = self.qtype.name if self.qtype is not None else str(self.stored_dtype)
        return f"WeightData({self.name!r}, shape={self.shape}, {kind})"


class Weights(Mapping[str, WeightData]):
    """A lazy name -> WeightData mapping over one or more files (nothing is read until a tensor is used)."""

    def __init__(self, entries: Mapping[str, WeightData], sources: list[str] | None = None) -> None:
        self._entries = dict(entries)
        self.sources = list(sources or [])

    def __getitem__(self, name: str) -> WeightData:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r} in {', '.join(self.sources) or 'the weights'}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes for w in self._entries.values())

    def state_dict(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Every tensor loaded (and dequantized) — O(total size) memory."""
        return {name: w.to_tensor(dtype) for name, w in self._entries.items()}
