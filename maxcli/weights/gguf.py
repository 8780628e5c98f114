"""Read a GGUF file (header by `gguf.GGUFReader`, cached as JSON: maxcli.weights.gguf_cache): metadata,
lazy tensors, HF-style config."""

from __future__ import annotations

import functools
import mmap
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFValueType

from maxcli.weights import gguf_cache
from maxcli.weights.dequant import block_layout
from maxcli.weights.gguf_cache import HeaderTensor
from maxcli.weights.weight_data import WeightData, Weights, WeightsError

_MADV_POPULATE_READ = 22  # Linux uapi value; Python 3.11's mmap module does not name it


class GGUFFile:
    """An open GGUF file. Opening reads the header and tensor index only (from maxcli's header cache when
    the file is unchanged since it was last read, else with gguf's reader); tensor bytes are one copy-on-write
    mapping of the whole file (see map_in_background), and each WeightData is a view into it. Raises
    WeightsError on a missing/truncated/corrupt file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._map_thread: threading.Thread | None = None
        self._mapping: mmap.mmap | None = None
        self._map_error: Exception | None = None
        if not self.path.is_file():
            raise WeightsError(f"GGUF file not found: {self.path}")
        try:
            self._header, from_cache = gguf_cache.read_header(self.path.resolve())
        except Exception as exc:  # the reader raises ValueError/IndexError/KeyError/OSError/... on bad bytes
            raise WeightsError(f"{self.path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        self._check_tensor_extents()
        if not from_cache:  # only headers that passed every check are cached
            gguf_cache.store(self._header)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> "GGUFFile":
        """A shared instance per file version: config resolution, encoding detection and weight loading
        all reuse one header (and, when one was needed, one GGUFReader parse of the vocabulary)."""
        p = Path(path).resolve()
        try:
            st = p.stat()
        except OSError:
            raise WeightsError(f"GGUF file not found: {path}") from None
        return _open_cached(p, st.st_mtime_ns, st.st_size)

    def _check_tensor_extents(self) -> None:
        """Every tensor's bytes must lie inside the file (a truncated download fails here, at open)."""
        size = self._header.file_size
        for t in self._header.tensors:
            if t.data_offset + t.n_bytes > size:
                raise WeightsError(
                    f"{self.path}: truncated GGUF file: tensor {t.name} needs bytes up to "
                    f"{t.data_offset + t.n_bytes}, file has {size}"
                )

    @functools.cached_property
    def metadata(self) -> dict[str, Any]:
        """All key/value fields as plain Python values (GGUF.* header fields excluded)."""
        return {name: self._header.contents(name) for name in self._header.fields}

    def get(self, key: str, default: Any = None) -> Any:
        """One metadata value without materialising the whole metadata dict. A vocabulary-sized array is
        not in the header cache: asking for one parses the file with gguf's reader (~0.5 s, once)."""
        return self._header.contents(key) if key in self._header.fields else default

    def value_type(self, key: str) -> GGUFValueType | None:
        field = self._header.fields.get(key)
        return field.types[0] if field is not None and field.types else None

    def array_length(self, key: str) -> int | None:
        """Number of elements of an array value (without decoding it); None when key is no array."""
        field = self._header.fields.get(key)
        return field.length if field is not None else None

    @property
    def architecture(self) -> str:
        arch = self.get("general.architecture")
        if not isinstance(arch, str):
            raise WeightsError(f"{self.path}: GGUF file has no general.architecture")
        return arch

    @functools.cached_property
    def tensors(self) -> dict[str, WeightData]:
        return {t.name: self._weight(t) for t in self._header.tensors}

    def weights(self) -> Weights:
        return Weights(self.tensors, [str(self.path)])

    def _weight(self, t: HeaderTensor) -> WeightData:
        qtype = t.tensor_type
        shape = tuple(reversed(t.shape))  # GGML lists ne0 (the row length) first
        block, type_size = block_layout(qtype)
        bytes_per_row = shape[-1] // block * type_size
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        path = self.path

        def load() -> torch.Tensor:
            # A view into the file's bytes in memory (the whole file is mapped once, see map_in_background).
            data = self._bytes[t.data_offset : t.data_offset + t.n_bytes]
            if data.size != t.n_bytes:
                raise WeightsError(f"{path}: truncated GGUF file: tensor {t.name} is cut short")
            return torch.from_numpy(data).view(rows, bytes_per_row)

        return WeightData(t.name, shape, qtype, int(t.n_bytes), load, source=str(path))

    def map_in_background(self) -> None:
        """Start mapping the file copy-on-write on a thread, page tables filled from the page cache by
        MADV_POPULATE_READ (~0.1 s for 500 MB, GIL released), so it overlaps tokenizer and model set-up
        instead of landing in the first forward as page faults. (MAP_POPULATE would hold mmap_lock for
        writing all that time and stall every allocation of the tokenizer load: 0.37 -> 0.6 s.)
        Zero copy: the tensors are views of the page cache. Not read into transparent huge pages: on this
        machine kind (a VM with free page reporting) a freshly faulted 2 MB page costs ~11 ms, 2.8 s for
        500 MB against 0.1 s here, which outweighs the ~8 % TLB saving on a 7B decode step. Idempotent."""
        if self._map_thread is None and "_bytes" not in self.__dict__:
            self._map_thread = threading.Thread(target=self._map, name="gguf-map", daemon=True)
            self._map_thread.start()

    def _map(self) -> None:
        try:
            with open(self.path, "rb") as f:
                m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            if sys.platform == "linux":
                try:  # page tables from the page cache, mmap_lock held for reading only
                    m.madvise(getattr(mmap, "MADV_POPULATE_READ", _MADV_POPULATE_READ))
                except OSError:  # kernels before 5.14: pages fault in on first touch instead
                    pass
            self._mapping = m
        except (OSError, ValueError) as exc:
            self._map_error = exc

    def release(self) -> None:
        """Drop this object's hold on the file's bytes (tensors already taken keep theirs alive); a later
        load maps the file again. The loader calls it once a model holds its weights, so a cached header
        never pins a model's worth of memory."""
        self.__dict__.pop("_bytes", None)
        if self._map_thread is not None:
            self._map_thread.join()
        self._map_thread, self._mapping = None, None

    @functools.cached_property
    def _bytes(self) -> np.ndarray:
        """The whole file's bytes (uint8), waiting for the background mapping if it is still running."""
        self.map_in_background()
        assert self._map_thread is not None
        self._map_thread.join()
        if self._mapping is None:
            raise WeightsError(f"{self.path}: cannot map the file: {self._map_error}")
        return np.frombuffer(self._mapping, dtype=np.uint8)

    @functools.cached_property
    def quantization_types(self) -> frozenset[GGMLQuantizationType]:
        """Distinct GGML types of the tensors in the file."""
        return frozenset(w.qtype for w in self.tensors.values() if w.qtype is not None)

    def hf_config(self) -> dict[str, Any]:
        """The file's metadata as a HF config.json dict (see maxcli.weights.gguf_config)."""
        from maxcli.weights.gguf_config import gguf_to_hf_config

        return gguf_to_hf_config(self)

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, arch={self.get('general.architecture')!r}, tensors={len(self._header.tensors)})"


@functools.lru_cache(maxsize=4)
def _open_cached(path: Path, mtime_ns: int, size: int) -> GGUFFile:
    return GGUFFile(path)
