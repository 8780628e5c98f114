"""Time of every block-kernel matmul of a GGUF file (one decode step's weight products, attention left out)
for M activation rows: what one more row costs a verify step (speculative decoding) or a small batch.

    python benchmarks/gguf_rows.py .cache/test-models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
"""
import sys, time, torch, numpy as np
from gguf import GGUFReader
from maxcli.ops import gguf_cpu
assert gguf_cpu.available()
torch.set_num_threads(2)
path = sys.argv[1]
r = GGUFReader(path)
ws = []
for t in r.tensors:
    if len(t.shape) == 2 and int(t.tensor_type) in {int(q) for q in gguf_cpu.KERNEL_QTYPES}:
        k, n = int(t.shape[0]), int(t.shape[1])
        raw = torch.from_numpy(np.asarray(t.data).reshape(n, -1).copy())
        ws.append((t.name, raw, int(t.tensor_type), n, k))
from collections import Counter
print(Counter(q for _, _, q, _, _ in ws))
for M in [1, 1, 2, 3, 4, 8, 16]:  # the first M=1 pass warms up
    xs = {k: torch.randn(M, k) for k in {w[4] for w in ws}}
    best = 1e9
    for rep in range(3):
        t0 = time.perf_counter()
        for name, raw, q, n, k in ws:
            gguf_cpu.linear(xs[k], [raw], [q], [n])
        best = min(best, time.perf_counter() - t0)
    print(f"M={M}: {best*1e3:.1f} ms")
