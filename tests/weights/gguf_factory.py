"""Write tiny random-weight GGUF files (gguf.GGUFWriter) for the architectures maxcli reads from GGUF.

Matrices are Q8_0 (real block bytes, so raw-row permutation is exercised), norms and biases F32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import quantize

HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB, LAYERS = 64, 4, 2, 16, 96, 128, 2


def _matrix(writer: GGUFWriter, rng: np.random.Generator, name: str, rows: int, cols: int) -> None:
    values = rng.standard_normal((rows, cols)).astype(np.float32) * 0.1
    writer.add_tensor(name, quantize(values, GGMLQuantizationType.Q8_0), raw_dtype=GGMLQuantizationType.Q8_0)


def _vector(writer: GGUFWriter, rng: np.random.Generator, name: str, n: int) -> None:
    writer.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))


def write_tiny_gguf(path: Path, arch: str, *, tied: bool = False, name: str = "tiny",
                    extra_kv: dict[str, int | float | str] | None = None) -> Path:
    """A GGUF of `arch` (llama, qwen2, qwen3, gemma3, phi3) with LAYERS layers of random weights."""
    rng = np.random.default_rng(abs(hash(arch)) % 2**32)
    writer = GGUFWriter(str(path), arch)
    writer.add_name(name)
    writer.add_uint32(f"{arch}.context_length", 256)
    writer.add_uint32(f"{arch}.embedding_length", HIDDEN)
    writer.add_uint32(f"{arch}.block_count", LAYERS)
    writer.add_uint32(f"{arch}.feed_forward_length", FFN)
    writer.add_uint32(f"{arch}.attention.head_count", HEADS)
    writer.add_uint32(f"{arch}.attention.head_count_kv", KV_HEADS)
    writer.add_uint32(f"{arch}.attention.key_length", HEAD_DIM)
    writer.add_uint32(f"{arch}.attention.value_length", HEAD_DIM)
    writer.add_uint32(f"{arch}.rope.dimension_count", HEAD_DIM)
    writer.add_float32(f"{arch}.rope.freq_base", 10000.0)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_uint32(f"{arch}.vocab_size", VOCAB)
    writer.add_uint32("tokenizer.ggml.bos_token_id", 1)
    writer.add_uint32("tokenizer.ggml.eos_token_id", 2)
    for key, value in (extra_kv or {}).items():
        if isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_uint32(key, value)

    _matrix(writer, rng, "token_embd.weight", VOCAB, HIDDEN)
    _vector(writer, rng, "output_norm.weight", HIDDEN)
    if not tied:
        _matrix(writer, rng, "output.weight", VOCAB, HIDDEN)
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    for i in range(LAYERS):
        p = f"blk.{i}."
        _vector(writer, rng, p + "attn_norm.weight", HIDDEN)
        _vector(writer, rng, p + "ffn_norm.weight", HIDDEN)
        _matrix(writer, rng, p + "attn_output.weight", HIDDEN, q)
        _matrix(writer, rng, p + "ffn_down.weight", HIDDEN, FFN)
        if arch == "phi3":
            _matrix(writer, rng, p + "attn_qkv.weight", q + 2 * kv, HIDDEN)
            _matrix(writer, rng, p + "ffn_up.weight", 2 * FFN, HIDDEN)
            continue
        _matrix(writer, rng, p + "attn_q.weight", q, HIDDEN)
        _matrix(writer, rng, p + "attn_k.weight", kv, HIDDEN)
        _matrix(writer, rng, p + "attn_v.weight", kv, HIDDEN)
        _matrix(writer, rng, p + "ffn_gate.weight", FFN, HIDDEN)
        _matrix(writer, rng, p + "ffn_up.weight", FFN, HIDDEN)
        if arch == "qwen2":
            for part, n in (("attn_q", q), ("attn_k", kv), ("attn_v", kv)):
                _vector(writer, rng, p + part + ".bias", n)
        if arch in ("qwen3", "gemma3"):
            _vector(writer, rng, p + "attn_q_norm.weight", HEAD_DIM)
            _vector(writer, rng, p + "attn_k_norm.weight", HEAD_DIM)
        if arch == "gemma3":
            _vector(writer, rng, p + "post_attention_norm.weight", HIDDEN)
            _vector(writer, rng, p + "post_ffw_norm.weight", HIDDEN)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
