"""safetensors reading: single file, sharded index, lazy loading, corrupt files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from maxcli.weights import WeightsError, load_weights


def test_minilm_tensors_equal_safetensors_load(minilm_dir: Path) -> None:
    path = minilm_dir / "model.safetensors"
    weights = load_weights([path])
    reference = load_file(str(path))
    assert set(weights) == set(reference)
    w = weights["embeddings.word_embeddings.weight"]
    assert w.shape == (30522, 384) and w.dtype == torch.float32 and w.qtype is None
    assert torch.equal(w.to_tensor(), reference["embeddings.word_embeddings.weight"])
    assert weights.nbytes == sum(t.numel() * t.element_size() for t in reference.values())


def test_sharded_index(tmp_path: Path) -> None:
    a = {"x": torch.arange(6, dtype=torch.float32).view(2, 3), "y": torch.ones(4, dtype=torch.bfloat16)}
    b = {"z": torch.full((3, 2), 2.0, dtype=torch.float16)}
    save_file(a, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file(b, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {"x": "model-00001-of-00002.safetensors", "y": "model-00001-of-00002.safetensors",
                            "z": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    weights = load_weights([tmp_path / "model.safetensors.index.json"])
    assert sorted(weights) == ["x", "y", "z"]
    assert weights["y"].to_tensor(torch.bfloat16).dtype == torch.bfloat16
    assert torch.equal(weights["z"].to_tensor(), b["z"].float())
    perm = torch.tensor([1, 0])
    assert torch.equal(weights["x"].permute_rows(perm).to_tensor(), a["x"][perm])
    both = load_weights([tmp_path / "model-00001-of-00002.safetensors", tmp_path / "model-00002-of-00002.safetensors"])
    assert sorted(both) == ["x", "y", "z"]


def test_corrupt_header_and_missing_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((100).to_bytes(8, "little") + b"{not json" + b" " * 91)
    with pytest.raises(WeightsError) as info:
        load_weights([bad])
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(WeightsError, match="not found"):
        load_weights([tmp_path / "missing.safetensors"])
    (tmp_path / "broken.safetensors.index.json").write_text("{}")
    with pytest.raises(WeightsError, match="not a valid safetensors index"):
        load_weights([tmp_path / "broken.safetensors.index.json"])
