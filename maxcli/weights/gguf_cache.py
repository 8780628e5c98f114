"""A GGUF file's header, read by `gguf.GGUFReader` once and kept as JSON in maxcli's cache.

GGUFReader turns every header value into numpy slices: for a chat model's vocabulary (tokens and merges,
~100k strings for a 49k-token vocabulary) that is ~1M slices, ~0.55 s. What opening a GGUF file needs
later (scalar and small array fields, the tensor table) is a few hundred KB of JSON, read back in
milliseconds. Large arrays are left out of the entry (their type and length are kept); their values come
from a GGUFReader opened on first access.

An entry lives at `$MAXCLI_CACHE/gguf-headers/<sha1 of the resolved path>.json` (MAXCLI_CACHE defaults to
~/.cache/maxcli) and holds the key it was written for: resolved path, size, mtime_ns, gguf version and
this module's schema. An entry whose key differs from the file's current one (the file changed, gguf was
upgraded), or that cannot be parsed, is ignored and rewritten. Entries are written to a temporary file
and renamed into place, so a reader never sees a partial entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType

from maxcli.weights.weight_data import WeightsError

SCHEMA = 1
# Arrays longer than this stay out of the cache entry (vocabulary-sized: tokens, scores, merges, types);
# per-layer arrays (a few hundred items at most) are kept, since config resolution reads them.
MAX_CACHED_ITEMS = 1024


def header_cache_dir() -> Path:
    return Path(os.environ.get("MAXCLI_CACHE", Path.home() / ".cache" / "maxcli")) / "gguf-headers"


class _ArrayReader(GGUFReader):
    """gguf's reader over a plain ndarray view of its memory map. The reader slices `data` once per header
    value; np.memmap's per-slice __array_finalize__ made that 3x slower. The view shares the mapping, so
    no tensor byte is read."""

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, value: np.ndarray) -> None:
        self._data = value.view(np.ndarray) if isinstance(value, np.memmap) else value


def _plain(value: Any) -> Any:
    """A reader value as a plain Python value (str / int / float / bool / list of those)."""
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class HeaderTensor:
    """One tensor-table entry; `shape` is in GGML order (ne0, the row length, first); `data_offset` is
    absolute in the file."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: tuple[int, ...]
    data_offset: int
    n_bytes: int


@dataclass(frozen=True)
class HeaderField:
    """One key/value: `types` as GGUFReader gives them ([ARRAY, item type] for arrays); `length` is an
    array's element count (None for scalars); `value` is None exactly when `cached` is False."""

    types: tuple[GGUFValueType, ...]
    length: int | None
    cached: bool
    value: Any = None


class GGUFHeader:
    """Fields (file order, GGUF.* excluded) and tensor table of one version of a GGUF file: the file as
    it was at `stat_key` = (size, mtime_ns). Values of fields not held here are read by a GGUFReader,
    opened at most once, and only while the file still has that size and mtime."""

    def __init__(self, path: Path, stat_key: tuple[int, int], fields: dict[str, HeaderField],
                 tensors: list[HeaderTensor]) -> None:
        self.path = path
        self.stat_key = stat_key
        self.fields = fields
        self.tensors = tensors
        self._reader: GGUFReader | None = None

    @property
    def file_size(self) -> int:
        return self.stat_key[0]

    def contents(self, key: str) -> Any:
        """The value of field `key` (KeyError when absent); a field not held opens the reader."""
        field = self.fields[key]
        return field.value if field.cached else _plain(self.reader().fields[key].contents())

    def reader(self) -> GGUFReader:
        if self._reader is None:
            st = self.path.stat()
            if (st.st_size, st.st_mtime_ns) != self.stat_key:
                raise WeightsError(f"{self.path}: the GGUF file changed after it was opened; open it again")
            try:
                self._reader = read_with_gguf(self.path)
            except Exception as exc:  # ValueError/IndexError/OSError/... on bad bytes
                raise WeightsError(f"{self.path}: not a readable GGUF file ({type(exc).__name__}: {exc})") from None
        return self._reader

    @classmethod
    def from_reader(cls, path: Path, stat_key: tuple[int, int], reader: GGUFReader) -> "GGUFHeader":
        fields: dict[str, HeaderField] = {}
        for key, f in reader.fields.items():
            if key.startswith("GGUF."):  # version and counts: the reader's own bookkeeping
                continue
            types = tuple(GGUFValueType(t) for t in f.types)
            length = len(f.data) if types and types[0] is GGUFValueType.ARRAY else None
            if length is not None and length > MAX_CACHED_ITEMS:
                fields[key] = HeaderField(types, length, cached=False)
            else:
                fields[key] = HeaderField(types, length, cached=True, value=_plain(f.contents()))
        tensors = [
            HeaderTensor(t.name, GGMLQuantizationType(int(t.tensor_type)), tuple(int(d) for d in t.shape.tolist()),
                         int(t.data_offset), int(t.n_bytes))
            for t in reader.tensors
        ]
        # The reader is not kept: its ~1M numpy slices (76 MB for SmolLM2) would live as long as the shared
        # GGUFFile; a later ask for a vocabulary array parses again.
        return cls(path, stat_key, fields, tensors)


def read_with_gguf(path: Path) -> GGUFReader:
    """Parse the header with gguf's reader (~0.55 s for a 49k-token vocabulary); tensor bytes stay on disk."""
    return _ArrayReader(path, "r")


def _key(path: Path, stat_key: tuple[int, int]) -> dict[str, Any]:
    from importlib.metadata import version

    return {"path": str(path), "size": stat_key[0], "mtime_ns": stat_key[1], "gguf": version("gguf"), "schema": SCHEMA}


def _entry_path(path: Path) -> Path:
    return header_cache_dir() / f"{hashlib.sha1(str(path).encode()).hexdigest()[:20]}.json"


def load_cached(path: Path, stat_key: tuple[int, int]) -> GGUFHeader | None:
    """The cached header of `path` (resolved) as it is at stat_key; None on no entry, a stale entry (any
    key part differs) or one that does not parse."""
    try:
        with open(_entry_path(path), encoding="utf-8") as f:
            entry = json.load(f)
        if entry["key"] != _key(path, stat_key):
            return None
        fields = {
            k: HeaderField(tuple(GGUFValueType(t) for t in e["types"]), e["length"], "value" in e, e.get("value"))
            for k, e in entry["fields"].items()
        }
        tensors = [HeaderTensor(n, GGMLQuantizationType(q), tuple(s), o, b) for n, q, s, o, b in entry["tensors"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # absent or damaged: read the file again
        return None
    return GGUFHeader(path, stat_key, fields, tensors)


def store(header: GGUFHeader) -> None:
    """Write header's entry (temp file + rename). Skipped when the file changed while it was read (the
    entry would describe a version of the file that no longer exists) or the cache is not writable."""
    try:
        st = header.path.stat()
        if (st.st_size, st.st_mtime_ns) != header.stat_key:
            return
        fields = {}
        for k, f in header.fields.items():
            fields[k] = {"types": [int(t) for t in f.types], "length": f.length}
            if f.cached:
                fields[k]["value"] = f.value
        entry = {
            "key": _key(header.path, header.stat_key),
            "fields": fields,
            "tensors": [[t.name, int(t.tensor_type), list(t.shape), t.data_offset, t.n_bytes] for t in header.tensors],
        }
        target = _entry_path(header.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(entry, f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except (OSError, TypeError, ValueError):  # a read-only home, an unencodable value: the cache is optional
        pass


def read_header(path: Path) -> tuple[GGUFHeader, bool]:
    """(path's header, whether it came from the cache). `path` must be resolved. A miss parses the file
    with gguf's reader; the caller validates the header, then store()s it."""
    st = path.stat()
    stat_key = (st.st_size, st.st_mtime_ns)
    cached = load_cached(path, stat_key)
    if cached is not None:
        return cached, True
    return GGUFHeader.from_reader(path, stat_key, read_with_gguf(path)), False
