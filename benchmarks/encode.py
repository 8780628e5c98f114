"""Encode throughput: maxcli's EmbeddingsPipeline vs HF transformers on the same model, in one run.

Both sides get the same sentences, batch size and torch thread count, tokenize inside the timed region,
and sort by length before batching (as sentence-transformers' encode does), so the ratio measures the
model code. Usage: python benchmarks/encode.py [--model-dir DIR] [--num-sentences 256] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel

from maxcli.pipelines.lib.embeddings import EmbeddingsPipeline
from maxcli.pipelines.lib.entrypoints import load_embedding_model

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / ".cache" / "test-models" / "all-MiniLM-L6-v2"
WORDS = (
    "the model encodes every sentence into a dense vector so that similar meanings lie close together "
    "while unrelated text ends up far apart search retrieval clustering and deduplication all rely on it "
    "numbers like 42 3.14 and 2024 appear too along with punctuation such as commas, dashes - and quotes"
).split()


def make_sentences(count: int, seed: int = 0) -> list[str]:
    """Deterministic sentences of 3 to 60 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 60))) + "." for _ in range(count)]


def hf_encode(model, tokenizer, sentences: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """sentence-transformers' recipe on HF AutoModel: length-sorted batches, mean pooling, normalize."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    out = np.empty((len(sentences), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer([sentences[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"][..., None].float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(mean, dim=-1).numpy()
    return out


def best_times(first, second, repeats: int) -> tuple[float, float]:
    """Best wall time of each function over `repeats` alternating runs, so both see the same machine load."""
    best = [float("inf"), float("inf")]
    for _ in range(repeats):
        for i, fn in enumerate((first, second)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--num-sentences", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=5, help="alternating timed runs per side; the best is reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, tokenizer, pooling, max_length = load_embedding_model(args.model_dir)
    pipeline = EmbeddingsPipeline(model, tokenizer, pooling, max_length, max_batch_size=args.batch_size)
    hf_model = AutoModel.from_pretrained(args.model_dir).eval()
    sentences = make_sentences(args.num_sentences)

    ours = pipeline.embed(sentences)  # warm-up, and the vectors compared below
    ref = hf_encode(hf_model, tokenizer, sentences, args.batch_size, max_length)
    worst_cosine = float(((ours * ref).sum(1)).min())

    t_ours, t_hf = best_times(
        lambda: pipeline.embed(sentences),
        lambda: hf_encode(hf_model, tokenizer, sentences, args.batch_size, max_length),
        args.repeats,
    )
    n = len(sentences)
    print(f"model {args.model_dir.name}: {n} sentences, batch {args.batch_size}, {args.threads} threads, "
          f"best of {args.repeats}")
    print(f"maxcli       : {n / t_ours:8.1f} sentences/s")
    print(f"transformers : {n / t_hf:8.1f} sentences/s")
    print(f"ratio        : {t_hf / t_ours:8.2f}x  (worst cosine vs transformers {worst_cosine:.6f})")


if __name__ == "__main__":
    main()
