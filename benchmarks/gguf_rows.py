"""Time of every block-kernel matmul of a GGUF file (one decode step's weight products, attention left out)
for M activation rows: what one more row costs a verify step (speculative decoding) or a small batch.
Each figure is the best of --repeats passes; a first M = 1 pass warms up and is not printed.

    python benchmarks/gguf_rows.py .cache/test-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

import torch

from maxcli.ops import cpu_ext, gguf_cpu
from maxcli.weights.gguf import GGUFFile
from maxcli.weights.weight_data import WeightsError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a GGUF file")
    parser.add_argument("--rows", default="1,2,3,4,8,16", help="comma-separated M values")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    if not gguf_cpu.available():
        sys.exit(f"error: maxcli's C++ CPU kernels are unavailable: {cpu_ext.unavailable_reason()}")
    try:
        weights = [w for w in GGUFFile.open(args.model).tensors.values()
                   if len(w.shape) == 2 and w.qtype in gguf_cpu.KERNEL_QTYPES]
    except (OSError, WeightsError) as exc:  # a missing, unreadable or corrupt file: one line
        sys.exit(f"error: {exc}")
    torch.set_num_threads(args.num_threads)
    products = [(w.raw_blocks(), int(w.qtype), w.shape[0], w.shape[1]) for w in weights]
    print("kernel tensors by type:", dict(Counter(w.qtype.name for w in weights)), f"threads: {args.num_threads}")
    for i, m in enumerate([1] + [int(r) for r in args.rows.split(",")]):
        xs = {k: torch.randn(m, k) for k in {p[3] for p in products}}
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for raw, qtype, n, k in products:
                gguf_cpu.linear(xs[k], [raw], [qtype], [n])
            best = min(best, time.perf_counter() - t0)
        if i:
            print(f"M={m}: {best * 1e3:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
