"""Write a Llama-2-7B-shaped GGUF with random weights (issue 18's 7B benchmark file).

    python benchmarks/random_gguf.py [--out FILE] [--qtype q4_0|q4_k] [--output-qtype q6_k|q8_0|q4_0] [--force]

Shape: the `llama` architecture of Llama-2-7B (hidden 4096, 32 layers, 32 heads and 32 KV heads, head dim
128, intermediate 11008, RMS norm eps 1e-5, rope base 10000, context 4096, untied output), with tensor
names and metadata keys as llama.cpp's converter writes them. One difference: the vocabulary is
SmolLM2-135M-Instruct's (49,152 tokens, GPT-2-style BPE), copied with its chat template and special ids
from that GGUF, so both engines have a real tokenizer; Llama-2's own has 32,000 tokens, so the embedding
and output matrices are ~1.5x Llama-2's (a few % of the file).

Weights: the attention and MLP matrices and token_embd are Q4_0 blocks (`--qtype q4_k`: Q4_K), written as
raw bytes: random nibbles with per-block fp16 scales picked so the dequantized weights have std ~0.02
(activations stay finite through 32 layers). output.weight is Q6_K (default), Q8_0 or Q4_0; the norms are
float32 ones. The text it generates is gibberish: the file exists to measure loading, memory and speed.

The file is written tensor by tensor (header and tensor table first, then each tensor's bytes), so this
script holds one tensor (<= ~25 MB) at a time, not the ~3.9 GB file. An existing file of the expected size
is kept unless --force.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".cache" / "bench" / "llama2-7b-random-q4_0.gguf"
TOKENIZER_GGUF = ROOT / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN, CONTEXT = 4096, 32, 32, 32, 11008, 4096
WEIGHT_STD = 0.02
QTYPES = {"q4_0": T.Q4_0, "q4_k": T.Q4_K, "q6_k": T.Q6_K, "q8_0": T.Q8_0}
FILE_TYPE = {T.Q4_0: 2, T.Q4_K: 15}  # llama.cpp's LLAMA_FTYPE_MOSTLY_Q4_0 / MOSTLY_Q4_K_M


def tensor_plan(qtype: T, output_qtype: T) -> list[tuple[str, tuple[int, int] | tuple[int], T]]:
    """(name, numpy-order shape (rows, cols) or (n,), type) in llama.cpp's order."""
    vocab = vocab_size()
    plan: list = [("token_embd.weight", (vocab, HIDDEN), qtype)]
    head_dim = HIDDEN // HEADS
    for i in range(LAYERS):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (HIDDEN,), T.F32),
            (b + "attn_q.weight", (HIDDEN, HIDDEN), qtype),
            (b + "attn_k.weight", (KV_HEADS * head_dim, HIDDEN), qtype),
            (b + "attn_v.weight", (KV_HEADS * head_dim, HIDDEN), qtype),
            (b + "attn_output.weight", (HIDDEN, HIDDEN), qtype),
            (b + "ffn_norm.weight", (HIDDEN,), T.F32),
            (b + "ffn_gate.weight", (FFN, HIDDEN), qtype),
            (b + "ffn_up.weight", (FFN, HIDDEN), qtype),
            (b + "ffn_down.weight", (HIDDEN, FFN), qtype),
        ]
    plan += [("output_norm.weight", (HIDDEN,), T.F32), ("output.weight", (vocab, HIDDEN), output_qtype)]
    return plan


def nbytes(shape: tuple[int, ...], qtype: T) -> int:
    if qtype == T.F32:
        return 4 * int(np.prod(shape))
    block, size = GGML_QUANT_SIZES[qtype]
    rows, cols = shape
    assert cols % block == 0, (shape, qtype)
    return rows * cols // block * size


def random_blocks(rng: np.random.Generator, n_weights: int, qtype: T) -> np.ndarray:
    """Raw bytes of n_weights random weights in `qtype` blocks, dequantizing to std ~WEIGHT_STD."""
    block, size = GGML_QUANT_SIZES[qtype]
    n = n_weights // block
    raw = np.frombuffer(rng.bytes(n * size), dtype=np.uint8).reshape(n, size).copy()
    jitter = rng.uniform(0.8, 1.2, size=n)  # per-block scale variation

    def f16(x: np.ndarray) -> np.ndarray:
        return x.astype(np.float16).view(np.uint8).reshape(n, 2)

    if qtype == T.Q4_0:  # d (f16), 16 bytes of nibbles; w = d * (q - 8), std(q - 8) ~ 4.6
        raw[:, 0:2] = f16(jitter * WEIGHT_STD / 4.6)
    elif qtype == T.Q8_0:  # d (f16), 32 int8; w = d * q, std(q) ~ 74
        raw[:, 0:2] = f16(jitter * WEIGHT_STD / 74)
    elif qtype == T.Q4_K:  # d, dmin (f16), 12 bytes of 6-bit scales/mins, 128 bytes of nibbles
        # every sub-block scale and min = 32: w = 32 d q - 32 dmin; dmin = 7.5 d centres q in 0..15
        d = jitter * WEIGHT_STD / (32 * 4.6)
        raw[:, 0:2] = f16(d)
        raw[:, 2:4] = f16(d * 7.5)
        raw[:, 4:12] = 0b10100000  # scales/mins 0-3: low 6 bits 32, top 2 bits = bits 4-5 of those of 4-7
        raw[:, 12:16] = 0  # low 4 bits of scales/mins 4-7 (32 = 0b10_0000)
    elif qtype == T.Q6_K:  # 128 ql, 64 qh, 16 int8 scales, d (f16); w = d * sc * (q - 32), std(q - 32) ~ 18.5
        raw[:, 192:208] = 4
        raw[:, 208:210] = f16(jitter * WEIGHT_STD / (4 * 18.5))
    else:
        raise ValueError(f"no random block writer for {qtype.name}")
    return raw.reshape(-1)


def vocab_size() -> int:
    return len(GGUFReader(TOKENIZER_GGUF).fields["tokenizer.ggml.tokens"].data)


def add_metadata(w: GGUFWriter, qtype: T) -> None:
    w.add_string("general.type", "model")
    w.add_string("general.name", "Llama-2-7B-shaped random weights (SmolLM2 tokenizer)")
    w.add_uint32("llama.block_count", LAYERS)
    w.add_uint32("llama.context_length", CONTEXT)
    w.add_uint32("llama.embedding_length", HIDDEN)
    w.add_uint32("llama.feed_forward_length", FFN)
    w.add_uint32("llama.attention.head_count", HEADS)
    w.add_uint32("llama.attention.head_count_kv", KV_HEADS)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_uint32("general.file_type", FILE_TYPE[qtype])
    w.add_uint32("llama.vocab_size", vocab_size())
    w.add_uint32("llama.rope.dimension_count", HIDDEN // HEADS)
    src = GGUFReader(TOKENIZER_GGUF)
    for key, field in src.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub_type=sub)
    w.add_uint32("general.quantization_version", 2)


def write(out: Path, qtype: T, output_qtype: T, seed: int) -> None:
    plan = tensor_plan(qtype, output_qtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".partial")
    w = GGUFWriter(tmp, "llama")
    add_metadata(w, qtype)
    for name, shape, t in plan:
        if t == T.F32:
            w.add_tensor_info(name, shape, np.dtype(np.float32), nbytes(shape, t))
        else:
            byte_shape = (shape[0], nbytes(shape, t) // shape[0])
            w.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes(shape, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for i, (name, shape, t) in enumerate(plan):
        data = np.ones(shape, np.float32) if t == T.F32 else random_blocks(rng, int(np.prod(shape)), t)
        w.write_tensor_data(data)
        if i % 45 == 0:
            print(f"  {i + 1}/{len(plan)} tensors, {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    w.close()
    tmp.replace(out)


def expected_size(qtype: T, output_qtype: T) -> int:
    """Lower bound on the file size (tensor bytes; the header adds a few MB)."""
    return sum(nbytes(shape, t) for _, shape, t in tensor_plan(qtype, output_qtype))


def ensure(out: Path = DEFAULT_OUT, qtype: str = "q4_0", output_qtype: str = "q6_k", force: bool = False,
           seed: int = 0) -> Path:
    """The file at `out`, written unless one of the right size is there."""
    q, oq = QTYPES[qtype], QTYPES[output_qtype]
    lo = expected_size(q, oq)
    if not force and out.is_file() and lo <= out.stat().st_size <= lo + 64 * 2**20:
        return out
    print(f"writing {out} ({lo / 1e9:.2f} GB of tensors, {qtype} + {output_qtype} output)", file=sys.stderr)
    write(out, q, oq, seed)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help=f"default: {DEFAULT_OUT} (q4_k: ...-q4_k.gguf)")
    ap.add_argument("--qtype", choices=("q4_0", "q4_k"), default="q4_0", help="attention/MLP/embedding blocks")
    ap.add_argument("--output-qtype", choices=("q6_k", "q8_0", "q4_0"), default="q6_k")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rewrite even if a file of the right size exists")
    args = ap.parse_args()
    out = args.out or DEFAULT_OUT.with_name(f"llama2-7b-random-{args.qtype}.gguf")
    path = ensure(out, args.qtype, args.output_qtype, args.force, args.seed)
    print(f"{path} {path.stat().st_size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
