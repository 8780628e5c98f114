"""Model weights: GGUF and safetensors readers, GGUF dequantization, GGUF -> HF naming."""

from __future__ import annotations

from pathlib import Path

from maxcli.weights.gguf import GGUFFile
from maxcli.weights.gguf_names import gguf_to_hf_names
from maxcli.weights.safetensors_io import load_safetensors
from maxcli.weights.weight_data import WeightData, Weights, WeightsError


def _format_of(path: Path) -> str:
    if path.suffix == ".gguf":
        return "gguf"
    if path.name.endswith((".safetensors", ".safetensors.index.json")):
        return "safetensors"
    return path.suffix or path.name


def load_weights(paths: list[Path]) -> Weights:
    """Lazy weights of the given files, read by suffix (.gguf or .safetensors / .safetensors.index.json).

    Several GGUF files (split checkpoints) merge like safetensors shards; formats cannot be mixed.
    """
    if not paths:
        raise WeightsError("no weight files given")
    paths = [Path(p) for p in paths]
    suffixes = {_format_of(p) for p in paths}
    if len(suffixes) > 1:
        raise WeightsError(f"weight files mix formats: {', '.join(str(p) for p in paths)}")
    kind = suffixes.pop()
    if kind == "safetensors":
        return load_safetensors(paths)
    if kind == "gguf":
        merged: dict[str, WeightData] = {}
        for path in paths:
            tensors = GGUFFile.open(path).tensors
            dup = set(tensors) & set(merged)
            if dup:
                raise WeightsError(f"{path}: tensor {sorted(dup)[0]} also appears in another weight file")
            merged.update(tensors)
        return Weights(merged, [str(p) for p in paths])
    raise WeightsError(f"unsupported weight file type {paths[0].name!r} (expected .gguf or .safetensors)")


__all__ = ["GGUFFile", "WeightData", "Weights", "WeightsError", "gguf_to_hf_names", "load_weights"]
