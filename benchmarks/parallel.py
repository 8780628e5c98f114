"""Tensor- and data-parallel figures on one machine, against the single-rank / single-replica run in the
same script.

TP: `maxcli.LLM(tensor_parallel_size=N)` (gloo ranks on CPU, NCCL on GPUs) vs N=1: single-stream decode
tok/s and a batch's output tok/s, greedy tokens checked equal.
DP: `maxcli serve --data-parallel-degree N` vs 1, as a server: C concurrent streaming-free completions,
output tok/s over the wall time of the burst.

    python benchmarks/parallel.py --model PATH.gguf [--tp 2] [--dp 2] [--devices cpu]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = [f"Write a short story about the number {n}." for n in range(64)]


def tp_run(model: str, tp: int, devices: str, new_tokens: int, batch: int) -> tuple[float, float, list[list[int]]]:
    from maxcli.engine.llm import LLM

    with LLM(model=model, tensor_parallel_size=tp, devices=devices, max_length=512, max_batch_size=batch) as llm:
        params = llm.default_sampling_params(max_new_tokens=new_tokens, temperature=0.0, ignore_eos=True)
        llm.generate(PROMPTS[:1], llm.default_sampling_params(max_new_tokens=4, temperature=0.0))  # warm-up
        t0 = time.perf_counter()
        one = llm.generate(PROMPTS[:1], params)[0]
        single = (len(one.token_ids) - 1) / (one.metrics.total_s - one.metrics.ttft_s)
        t0 = time.perf_counter()
        outs = llm.generate(PROMPTS[:batch], params)
        batched = sum(len(o.token_ids) for o in outs) / (time.perf_counter() - t0)
        return single, batched, [o.token_ids for o in outs]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dp_run(model: str, dp: int, devices: str, new_tokens: int, concurrency: int) -> float:
    import httpx

    port = _free_port()
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "maxcli", "serve", "--model", model, "--port", str(port), "--devices", devices,
           "--data-parallel-degree", str(dp), "--max-length", "512"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(log.name).read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)

        async def burst() -> int:
            async with httpx.AsyncClient(timeout=600) as client:
                body = {"model": model, "max_tokens": new_tokens, "temperature": 0, "ignore_eos": True}
                replies = await asyncio.gather(*(client.post(f"{base}/v1/completions", json={**body, "prompt": p})
                                                 for p in PROMPTS[:concurrency]))
                return sum(r.json()["usage"]["completion_tokens"] for r in replies)

        asyncio.run(burst())  # warm-up: first-call costs out of the measured burst
        t0 = time.perf_counter()
        tokens = asyncio.run(burst())
        return tokens / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(60)
        os.unlink(log.name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--tp", type=int, default=2)
    ap.add_argument("--dp", type=int, default=2)
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    s1, b1, t1 = tp_run(args.model, 1, args.devices, args.new_tokens, args.batch)
    sn, bn, tn = tp_run(args.model, args.tp, args.devices, args.new_tokens, args.batch)
    print(f"TP=1          single stream {s1:7.1f} tok/s   batch {args.batch} {b1:7.1f} out tok/s")
    print(f"TP={args.tp:<10} single stream {sn:7.1f} tok/s   batch {args.batch} {bn:7.1f} out tok/s"
          f"   ratio {sn / s1:.2f}x / {bn / b1:.2f}x   greedy tokens equal: {t1 == tn}")
    d1 = dp_run(args.model, 1, args.devices, args.new_tokens, args.batch)
    dn = dp_run(args.model, args.dp, args.devices, args.new_tokens, args.batch)
    print(f"DP=1 server   {args.batch} concurrent requests {d1:7.1f} out tok/s")
    print(f"DP={args.dp:<10} {args.batch} concurrent requests {dn:7.1f} out tok/s   ratio {dn / d1:.2f}x")


if __name__ == "__main__":
    main()
