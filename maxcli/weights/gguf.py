"""Read a GGUF file (memory-mapped through `gguf.GGUFReader`): metadata, lazy tensors, HF-style config."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

from maxcli.weights.dequant import block_layout
from maxcli.weights.weight_data import WeightData, Weights, WeightsError


def _field_value(field: Any) -> Any:
    """A ReaderField as a plain Python value (str / int / float / bool / list)."""
    value = field.contents()
    if isinstance(value, np.generic):
        value = value.item()
    return value


class _ArrayReader(GGUFReader):
    """gguf's reader over a plain ndarray view of its memory map. The reader slices `data` once per header
    value (~1M slices for a 49k-token vocabulary); np.memmap's per-slice __array_finalize__ made that 3x
    slower. The view shares the mapping, so tensor bytes still stay on disk until read."""

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value


class GGUFFile:
    """An open GGUF file. Opening parses the header and tensor index only; tensor bytes stay on disk
    (memory-mapped) until a WeightData is loaded. Raises WeightsError on a missing/truncated/corrupt file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise WeightsError(f"GGUF file not found: {self.path}")
        try:
            self._reader = _ArrayReader(self.path, "r")
        except Exception as exc:  # the reader raises ValueError/IndexError/KeyError/... on bad bytes
            raise WeightsError(f"{self.path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        self._check_tensor_extents()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "GGUFFile":
        """A shared, parsed instance per file (parsing the header is the slow part: the vocabulary
        arrays): config resolution, encoding detection and weight loading all reuse one parse."""
        p = Path(path).resolve()
        try:
            st = p.stat()
        except OSError:
            raise WeightsError(f"GGUF file not found: {path}") from None
        return _open_cached(p, st.st_mtime_ns, st.st_size)

    def _check_tensor_extents(self) -> None:
        """Every tensor's bytes must lie inside the file (a truncated download fails here, at open)."""
        size = self.path.stat().st_size
        for t in self._reader.tensors:
            if t.data_offset + t.n_bytes > size or t.data.nbytes != t.n_bytes:
                raise WeightsError(
                    f"{self.path}: truncated GGUF file: tensor {t.name} needs bytes up to "
                    f"{t.data_offset + t.n_bytes}, file has {size}"
                )

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        """All key/value fields as plain Python values (GGUF.* header fields excluded)."""
        return {
            name: _field_value(field)
            for name, field in self._reader.fields.items()
            if not name.startswith("GGUF.")
        }

    def get(self, key: str, default: Any = None) -> Any:
        """One metadata value without materialising the whole (large: vocabulary) metadata dict."""
        field = self._reader.fields.get(key)
        return default if field is None else _field_value(field)

    def value_type(self, key: str) -> GGUFValueType | None:
        field = self._reader.fields.get(key)
        return field.types[0] if field is not None and field.types else None

    @property
    def architecture(self) -> str:
        arch = self.get("general.architecture")
        if not isinstance(arch, str):
            raise WeightsError(f"{self.path}: GGUF file has no general.architecture")
        return arch

    @functools.cached_property
    def tensors(self) -> dict[str, WeightData]:
        return {t.name: self._weight(t) for t in self._reader.tensors}

    def weights(self) -> Weights:
        return Weights(self.tensors, [str(self.path)])

    def _weight(self, t: Any) -> WeightData:
        qtype = GGMLQuantizationType(int(t.tensor_type))
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # GGML lists ne0 (the row length) first
        _, type_size = block_layout(qtype)
        block = block_layout(qtype)[0]
        bytes_per_row = shape[-1] // block * type_size
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        data = t.data
        path = self.path

        def load() -> torch.Tensor:
            try:
                flat = np.frombuffer(data, dtype=np.uint8, count=t.n_bytes)
            except ValueError as exc:
                raise WeightsError(f"{path}: cannot read tensor {t.name}: {exc}") from None
            return torch.from_numpy(flat.copy()).view(rows, bytes_per_row)

        return WeightData(t.name, shape, qtype, int(t.n_bytes), load, source=str(path))

    @functools.cached_property
    def quantization_types(self) -> frozenset[GGMLQuantizationType]:
        """Distinct GGML types of the tensors in the file."""
        return frozenset(w.qtype for w in self.tensors.values() if w.qtype is not None)

    def hf_config(self) -> dict[str, Any]:
        """The file's metadata as a HF config.json dict (see maxcli.weights.gguf_config)."""
        from maxcli.weights.gguf_config import gguf_to_hf_config

        return gguf_to_hf_config(self)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, arch={self.get('general.architecture')!r}, tensors={len(self._reader.tensors)})"


@functools.lru_cache(maxsize=4)
def _open_cached(path: Path, mtime_ns: int, size: int) -> GGUFFile:
    return GGUFFile(path)
