"""`maxcli warm-cache` and `maxcli encode` on the real models, offline, and their one-line failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from cli_errors import assert_one_line_error

REPO = Path(__file__).resolve().parents[2]


def maxcli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("maxcli")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "maxcli"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, input=stdin, timeout=300, env=env)


def test_warm_cache_gguf_json(smollm2_gguf):
    r = maxcli("warm-cache", "--model", str(smollm2_gguf), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["architecture"] == "LlamaForCausalLM" and s["encoding"] == "q4_1" and s["weights_format"] == "gguf"
    assert s["files"][0]["bytes"] == smollm2_gguf.stat().st_size and s["num_tensors"] > 100


def test_warm_cache_minilm_table(minilm_dir):
    r = maxcli("warm-cache", "--model", str(minilm_dir))
    assert r.returncode == 0, r.stderr
    assert "BertModel" in r.stdout and "float32" in r.stdout and "model.safetensors" in r.stdout


def test_warm_cache_failures(tmp_path, smollm2_gguf, minilm_dir):
    truncated = tmp_path / "trunc.gguf"
    with open(smollm2_gguf, "rb") as src:
        truncated.write_bytes(src.read(5_000_000))
    assert_one_line_error(maxcli("warm-cache", "--model", str(truncated)), "trunc.gguf")

    corrupt = tmp_path / "corrupt"
    shutil.copytree(minilm_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\xff" * 64)
    assert_one_line_error(maxcli("warm-cache", "--model", str(corrupt)), "model.safetensors")

    assert_one_line_error(maxcli("warm-cache", "--model", str(tmp_path / "does-not-exist")), "does-not-exist")

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({"architectures": ["FooBarForCausalLM"], "model_type": "foobar"}))
    assert_one_line_error(maxcli("warm-cache", "--model", str(unknown)), "FooBarForCausalLM", "LlamaForCausalLM")

    r = maxcli("warm-cache", "--model", str(smollm2_gguf), "--quantization-encoding", "q6_k")
    assert_one_line_error(r, "q6_k", "q4_1")

    import torch

    if not torch.cuda.is_available():
        assert_one_line_error(maxcli("warm-cache", "--model", str(smollm2_gguf), "--devices", "gpu:0"), "CUDA device")


def test_encode_json_and_npy(tmp_path, minilm_dir):
    out = tmp_path / "v.npy"
    r = maxcli("encode", "--model", str(minilm_dir), "--prompt", "A cat sat on the mat.", "--prompt", "-",
               "--json", "--output", str(out), stdin="Stocks fell sharply today.\n")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    vecs = np.load(out)
    assert vecs.shape == (2, 384) and len(d["embeddings"]) == 2
    np.testing.assert_allclose(np.array(d["embeddings"][1]["embedding"]), vecs[1], rtol=1e-6)
    assert abs(np.linalg.norm(vecs[0]) - 1.0) < 1e-5  # normalize module of the sentence-transformers config
    assert d["embeddings"][0]["num_tokens"] > 3


def test_encode_table_and_errors(tmp_path, minilm_dir):
    r = maxcli("encode", "--model", str(minilm_dir), "--prompt", "hello world")
    assert r.returncode == 0 and "384" in r.stdout, r.stderr
    long = " ".join(["word"] * 600)
    assert_one_line_error(maxcli("encode", "--model", str(minilm_dir), "--prompt", long), "max_length")
    ok = maxcli("encode", "--model", str(minilm_dir), "--prompt", long, "--truncate", "--json")
    assert ok.returncode == 0, ok.stderr
    assert_one_line_error(maxcli("encode", "--model", str(minilm_dir)), "nothing to encode")
