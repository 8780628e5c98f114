"""Issue 8 in one run (kept as it was; issue 18's harness is compare.py): every CPU target of issue 8 side by side.

    python benchmarks/compare_issue8.py [--model FILE.gguf] [--threads 2] [--rounds 3] [--batch 64] [--json-out F]

1. Cold start: process start to first token of `maxcli generate` (fresh subprocesses after one untimed
   warm-up, exact and packed), peak RSS against weights (float32) + KV cache + 600 MB (cold_start.py).
2. Single-stream greedy decode, 128 new tokens: maxcli exact float32, maxcli packed
   (--cpu-quantized-matmul), HF transformers float32, llama.cpp (llama-cpp-python, when it imports),
   interleaved round after round in this process with the same thread count; best round of each.
3. `--batch` prompts of ~100 tokens, 128 new tokens each (one generate call; HF: one left-padded
   generate): out tok/s. maxcli packed with its default float32 KV cache and with --cache-dtype bfloat16.
   vLLM-CPU is not installable here; its figure (298 out tok/s, issue 8) is quoted, not measured.
4. Prefix caching: TTFT of a request whose 1,000-token prefix is cached vs the request that prefilled it
   (prefix_cache.py), default engine settings.

Ends with one table: target, measured, met or the distance.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

import cold_start
import decode_cpu
import prefix_cache

VLLM_CPU_BATCH_TOK_S = 298.0  # issue 8's reference figure: vLLM-CPU 0.32 bf16, 64 x (100 in, 128 out)


def cold_start_section(model: Path, runs: int) -> dict[str, Any]:
    cli = str(Path(sys.executable).with_name("maxcli"))
    out: dict[str, Any] = {"budget": cold_start.rss_budget(model)}
    for name, flag in (("exact", "--no-cpu-quantized-matmul"), ("packed", "--cpu-quantized-matmul")):
        cmd = [cli, "generate", "--model", str(model), "--prompt", cold_start.PROMPT, "--max-new-tokens", "8", flag]
        cold_start.run_once(cmd)  # warm-up: page cache, tokenizer and config caches
        out[name] = cold_start.summarize([cold_start.run_once(cmd) for _ in range(runs)])
    return out


def batch_runner(model: Path, batch: int, new_tokens: int, kv_cache: dict[str, Any], **llm_kwargs: Any):
    from maxcli.engine.llm import LLM
    from maxcli.interfaces import SamplingParams

    kv_cache = {"enable_prefix_caching": False, **kv_cache}
    llm = LLM(model=str(model), max_length=512, max_batch_size=batch, kv_cache=kv_cache, **llm_kwargs)
    params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    llm.generate(decode_cpu.batch_prompts(2), SamplingParams(temperature=0.0, max_new_tokens=4))  # warm-up

    def run() -> float:
        start = time.perf_counter()
        outs = llm.generate(decode_cpu.batch_prompts(batch), params)
        return sum(len(o.token_ids) for o in outs) / (time.perf_counter() - start)

    return llm, run


def decode_section(model: Path, threads: int, rounds: int, new_tokens: int) -> dict[str, float]:
    runners = {
        "maxcli exact fp32": decode_cpu.maxcli_runner(model, False, new_tokens, 0)[0],
        "maxcli packed": decode_cpu.maxcli_runner(model, True, new_tokens, 0)[0],
        "HF transformers fp32": decode_cpu.hf_runner(model, new_tokens, 0)[0],
    }
    llama = decode_cpu.llama_cpp_runner(model, new_tokens, threads)
    if llama is not None:
        runners["llama.cpp"] = llama
    runs: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(rounds):
        for name, one in runners.items():
            runs[name].append(one())
    del runners
    gc.collect()
    return {k: max(v) for k, v in runs.items()}


def batch_section(model: Path, batch: int, new_tokens: int) -> dict[str, float]:
    out: dict[str, float] = {}
    configs = {  # name: (PipelineConfig fields, kv_cache section fields)
        "maxcli packed": ({"cpu_quantized_matmul": True}, {}),
        "maxcli packed, bf16 KV": ({"cpu_quantized_matmul": True}, {"cache_dtype": "bfloat16"}),
        "maxcli exact fp32": ({}, {}),
    }
    for name, (fields, kv) in configs.items():
        llm, run = batch_runner(model, batch, new_tokens, kv, **fields)
        out[name] = run()
        llm.close()
        del llm, run
        gc.collect()
    _, hf_batched = decode_cpu.hf_runner(model, new_tokens, batch)
    assert hf_batched is not None
    out["HF transformers fp32"] = hf_batched()
    return out


def verdict(ok: bool, distance: str) -> str:
    return "met" if ok else f"not met ({distance})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=decode_cpu.DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="single-stream rounds (best of)")
    ap.add_argument("--cold-runs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefix-tokens", type=int, default=1000)
    ap.add_argument("--json-out", type=Path, help="also write every figure here")
    args = ap.parse_args()
    if not args.model.is_file():
        sys.exit(f"model file not found: {args.model}")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # the cold-start subprocesses
    t0 = time.perf_counter()

    cold = cold_start_section(args.model, args.cold_runs)
    budget = cold["budget"]["budget_bytes"]
    print(f"cold start (best / median of {args.cold_runs}), peak RSS vs budget {budget / 1e6:.0f} MB "
          f"(weights {cold['budget']['weights_bytes'] / 1e6:.0f} + KV {cold['budget']['kv_cache_bytes'] / 1e6:.0f} + 600):")
    for name in ("exact", "packed"):
        c = cold[name]
        print(f"  maxcli generate, {name:<7} {c['ttft_min_s']:5.2f} s / {c['ttft_median_s']:5.2f} s   "
              f"peak RSS {c['peak_rss_max_bytes'] / 1e6:6.0f} MB")

    single = decode_section(args.model, args.threads, args.rounds, args.new_tokens)
    print(f"\nsingle-stream decode, {args.new_tokens} new tokens, best of {args.rounds} interleaved rounds:")
    for name, v in single.items():
        print(f"  {name:<24}{v:8.1f} tok/s  {1000 / v:6.1f} ms/token  {v / single['HF transformers fp32']:5.2f}x HF")

    batched = batch_section(args.model, args.batch, args.new_tokens)
    hf_b = batched["HF transformers fp32"]
    print(f"\n{args.batch} prompts x (~100 in, {args.new_tokens} out), out tok/s:")
    for name, v in batched.items():
        print(f"  {name:<24}{v:8.1f} tok/s  {v / hf_b:5.2f}x HF  {v / VLLM_CPU_BATCH_TOK_S:5.2f}x the vLLM-CPU figure")

    cached_cold, cached_warm = prefix_cache.ttfts(str(args.model), args.prefix_tokens, 3, caching=True)
    _, uncached = prefix_cache.ttfts(str(args.model), args.prefix_tokens, 3, caching=False)
    print(f"\nprefix caching, {args.prefix_tokens}-token shared prefix (best of 3): first request "
          f"{cached_cold * 1e3:.0f} ms, second (cached) {cached_warm * 1e3:.0f} ms, second with caching off "
          f"{uncached * 1e3:.0f} ms")

    packed, hf, llama = single["maxcli packed"], single["HF transformers fp32"], single.get("llama.cpp")
    best_batch = max(batched["maxcli packed"], batched["maxcli exact fp32"])
    cold_default = cold["exact"]["ttft_median_s"]  # `maxcli generate` as it ships (exact path)
    rss = max(cold["exact"]["peak_rss_max_bytes"], cold["packed"]["peak_rss_max_bytes"])
    rows = [
        ("single-stream >= llama.cpp", f"{packed:.1f} vs {llama:.1f} tok/s" if llama else "llama.cpp not importable",
         verdict(bool(llama) and packed >= llama, f"{packed / llama:.2f}x" if llama else "no peer")),
        ("single-stream >= 6x HF", f"{packed / hf:.2f}x", verdict(packed >= 6 * hf, f"{packed / hf:.2f}x of 6x")),
        (f"batch {args.batch} >= 2.5x HF", f"{best_batch / hf_b:.2f}x ({best_batch:.0f} vs {hf_b:.0f})",
         verdict(best_batch >= 2.5 * hf_b, f"{best_batch / hf_b:.2f}x of 2.5x")),
        (f"batch {args.batch} >= 1.5x vLLM-CPU 298", f"{best_batch / VLLM_CPU_BATCH_TOK_S:.2f}x",
         verdict(best_batch >= 1.5 * VLLM_CPU_BATCH_TOK_S, f"{best_batch / VLLM_CPU_BATCH_TOK_S:.2f}x of 1.5x")),
        ("cold start <= 2 s (median, default)", f"{cold_default:.2f} s (packed {cold['packed']['ttft_median_s']:.2f} s)",
         verdict(cold_default <= 2.0, f"{cold_default - 2:.2f} s over")),
        ("peak RSS <= budget", f"{rss / 1e6:.0f} / {budget / 1e6:.0f} MB", verdict(rss <= budget, "over")),
        ("prefix TTFT >= 5x sooner", f"{cached_cold / cached_warm:.1f}x",
         verdict(cached_cold >= 5 * cached_warm, f"{cached_cold / cached_warm:.1f}x")),
    ]
    print(f"\n{'target':<38}{'measured':<30}verdict")
    for target, measured, v in rows:
        print(f"{target:<38}{measured:<30}{v}")
    print(f"\n(one run, {time.perf_counter() - t0:.0f} s, threads={args.threads}, torch {torch.__version__})")
    if args.json_out:
        figures = {"cold": cold, "single": single, "batch": batched, "vllm_cpu_quoted": VLLM_CPU_BATCH_TOK_S,
                   "prefix": {"first_s": cached_cold, "cached_s": cached_warm, "uncached_s": uncached},
                   "targets": [{"target": t, "measured": m, "verdict": v} for t, m, v in rows]}
        args.json_out.write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
