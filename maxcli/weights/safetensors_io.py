"""Lazy, memory-mapped safetensors reading: one file or a sharded checkpoint (model.safetensors.index.json)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from maxcli.weights.weight_data import WeightData, Weights, WeightsError

_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


def open_safetensors(path: Path):
    if not path.is_file():
        raise WeightsError(f"safetensors file not found: {path}")
    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # SafetensorError / OSError on a bad header
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{path}: not a readable safetensors file ({detail})") from None


def read_safetensors(path: str | Path) -> dict[str, WeightData]:
    """Lazy WeightData for every tensor in one .safetensors file (header parsed now, data on use)."""
    path = Path(path)
    handle = open_safetensors(path)
    out: dict[str, WeightData] = {}
    for name in handle.keys():
        sl = handle.get_slice(name)
        shape = tuple(int(d) for d in sl.get_shape())
        dtype = _DTYPES.get(sl.get_dtype())
        if dtype is None:
            raise WeightsError(f"{path}: tensor {name} has unsupported dtype {sl.get_dtype()}")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = numel * torch.empty((), dtype=dtype).element_size()

        def load(name: str = name) -> torch.Tensor:
            try:
                return handle.get_tensor(name)
            except Exception as exc:
                raise WeightsError(f"{path}: cannot read tensor {name}: {exc}") from None

        out[name] = WeightData(name, shape, None, nbytes, load, stored_dtype=dtype, source=str(path))
    return out


def read_safetensors_index(index_path: str | Path) -> dict[str, WeightData]:
    """All tensors of a sharded checkpoint, each read from the shard the index names."""
    index_path = Path(index_path)
    try:
        weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
    except FileNotFoundError:
        raise WeightsError(f"safetensors index not found: {index_path}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{index_path}: not a valid safetensors index ({type(exc).__name__}: {exc})") from None
    shards = sorted(set(weight_map.values()))
    out: dict[str, WeightData] = {}
    for shard in shards:
        tensors = read_safetensors(index_path.parent / shard)
        for name, weight in tensors.items():
            if weight_map.get(name) == shard:
                out[name] = weight
    missing = sorted(set(weight_map) - set(out))
    if missing:
        raise WeightsError(f"{index_path}: tensors listed but absent from their shard: {', '.join(missing[:5])}")
    return out


def load_safetensors(paths: list[Path]) -> Weights:
    """Tensors of several .safetensors files (or index files); a name in two files is an error."""
    merged: dict[str, WeightData] = {}
    for path in paths:
        path = Path(path)
        tensors = read_safetensors_index(path) if path.name.endswith(".index.json") else read_safetensors(path)
        dup = set(tensors) & set(merged)
        if dup:
            raise WeightsError(f"{path}: tensor {sorted(dup)[0]} also appears in another weight file")
        merged.update(tensors)
    return Weights(merged, [str(p) for p in paths])
