"""Bad GGUF data through `maxcli generate` on the default (GGUF-native) path: one line on stderr, exit 1.
Each case is a copy of the real SmolLM2 file with a few bytes changed: a block scale set to Inf, a
tensor type id no GGML build knows, a row length that does not fill whole blocks of its type."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gguf import GGUFReader

from cli_errors import assert_one_line_error

TENSOR = "blk.0.attn_q.weight"  # Q4_1 [576, 576] in SmolLM2-135M-Instruct.Q4_1.gguf


def patched(src: Path, dst: Path, edit) -> Path:
    reader = GGUFReader(src)
    info = next(t for t in reader.tensors if t.name == TENSOR)
    del reader
    shutil.copyfile(src, dst)
    # Tensor info: name length (u64), name, n_dims (u32), dims (u64 each), type (u32), data offset (u64).
    dims_at = info.field.offset + 8 + len(TENSOR) + 4
    with open(dst, "r+b") as f:
        edit(f, info, dims_at)
    return dst


def generate(model: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maxcli", "generate", "--model", str(model), "--prompt", "Hi", "--max-new-tokens", "1"],
        capture_output=True, text=True, timeout=300,
    )


def inf_scale(f, info, dims_at) -> None:
    f.seek(info.data_offset + 18 * 20)  # block 18 of row 0: its fp16 d
    f.write(b"\x00\x7c")


def unknown_type(f, info, dims_at) -> None:
    f.seek(dims_at + 8 * len(info.shape))
    f.write((99).to_bytes(4, "little"))


def ragged_rows(f, info, dims_at) -> None:
    f.seek(dims_at)
    f.write((570).to_bytes(8, "little"))  # 570 values per row: not whole blocks of 32


@pytest.mark.parametrize(
    "edit, fragment",
    [(inf_scale, "non-finite scale"), (unknown_type, "not a valid GGMLQuantizationType"),
     (ragged_rows, "not a multiple of Q4_1 block size")],
    ids=["corrupt block", "unknown type", "ragged rows"],
)
def test_bad_gguf_data_is_one_line(smollm2_gguf: Path, tmp_path: Path, edit, fragment: str) -> None:
    r = generate(patched(smollm2_gguf, tmp_path / "bad.gguf", edit))
    assert_one_line_error(r, fragment)
    assert r.returncode == 1
