"""CPU decode speed and cold start, in one run: maxcli exact (float32 dequantized), maxcli packed
(--cpu-quantized-matmul), HF transformers float32 on the same GGUF, and llama.cpp when llama_cpp imports.

Decode: greedy, one stream, N new tokens always produced (ignore_eos / no eos); tok/s = (N - 1) /
(last token time - first token time). Engines run interleaved, round after round, in the same process
and thread count, so load from other processes hits them alike; the best round of each is reported.
Optional batch: B prompts of ~100 tokens, N new tokens each, tok/s = B * N / wall time (HF: one left-padded generate).
Cold start: wall time of `maxcli generate --model GGUF --prompt hi --max-new-tokens 1` as a subprocess
(exact and packed), plus the slowest imports of the CLI (python -X importtime).

Usage: python benchmarks/decode_cpu.py [--model FILE.gguf] [--threads 2] [--new-tokens 128] [--rounds 2]
       [--batch 0] [--skip-hf] [--skip-cold-start]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench_prompts import PROMPT, batch_prompts  # noqa: F401  (batch_prompts: used by compare.py)
from maxcli.engine.llm import LLM
from maxcli.interfaces import SamplingParams

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / ".cache/test-models/SmolLM2-135M-Instruct.Q4_1.gguf"

# What `maxcli generate` imports before its first token (the CLI module itself imports lazily).
GENERATE_PATH_IMPORTS = "maxcli.engine.llm, maxcli.pipelines, transformers.models.llama.configuration_llama"

DecodeRun = Callable[[], float]  # one timed single-stream run -> decode tok/s


def maxcli_runner(model: Path, quantized: bool, new_tokens: int, batch: int) -> tuple[DecodeRun, DecodeRun | None]:
    llm = LLM(model=str(model), max_length=512, cpu_quantized_matmul=quantized, enable_prefix_caching=False)
    params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    llm.generate(PROMPT, SamplingParams(temperature=0.0, max_new_tokens=4))  # warm-up

    def single() -> float:
        return llm.generate(PROMPT, params)[0].metrics.decode_tok_s

    def batched() -> float:
        prompts = batch_prompts(batch)
        start = time.perf_counter()
        outs = llm.generate(prompts, params)
        return sum(len(o.token_ids) for o in outs) / (time.perf_counter() - start)

    return single, batched if batch else None


class TokenClock:
    """A generate() streamer: the first put() is the prompt, then one per new token."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, value: Any) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def hf_runner(model: Path, new_tokens: int, batch: int) -> tuple[DecodeRun, DecodeRun | None]:
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(model.parent, gguf_file=model.name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model.parent, gguf_file=model.name, dtype=torch.float32)
    hf.generation_config.eos_token_id = None
    hf.generation_config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token

    def generate(enc: Any, streamer: Any = None) -> Any:
        with torch.inference_mode():
            return hf.generate(**enc, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, streamer=streamer)

    generate(tok(PROMPT, return_tensors="pt"))  # warm-up

    def single() -> float:
        clock = TokenClock()
        generate(tok(PROMPT, return_tensors="pt"), clock)
        stamps = clock.stamps[1:]
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    def batched() -> float:
        prompts = batch_prompts(batch)
        start = time.perf_counter()
        out = generate(tok(prompts, return_tensors="pt", padding=True))
        return batch * (out.shape[1] - tok(prompts, return_tensors="pt", padding=True)["input_ids"].shape[1]) / (
            time.perf_counter() - start
        )

    return single, batched if batch else None


def llama_cpp_runner(model: Path, new_tokens: int, threads: int) -> DecodeRun | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    llm = Llama(model_path=str(model), n_threads=threads, n_ctx=512, verbose=False)
    llm(PROMPT, max_tokens=4, temperature=0.0)  # warm-up

    def single() -> float:
        stamps = []
        no_eos = {llm.token_eos(): -1e9}  # always the full number of tokens, like ignore_eos
        for _ in llm(PROMPT, max_tokens=new_tokens, temperature=0.0, stream=True, logit_bias=no_eos):
            stamps.append(time.perf_counter())
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])

    return single


def cold_start(model: Path, quantized: bool) -> float:
    cli = Path(sys.executable).with_name("maxcli")
    cmd = [str(cli), "generate", "--model", str(model), "--prompt", "hi", "--max-new-tokens", "1"]
    cmd.append("--cpu-quantized-matmul" if quantized else "--no-cpu-quantized-matmul")
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def slowest_imports(modules: str, top: int = 8) -> list[tuple[float, str]]:
    """(cumulative seconds, module) of the slowest top-level imports that `import modules` triggers."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {modules}"], capture_output=True, text=True, check=True
    ).stderr
    rows = []
    for line in out.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(2)) <= 2:  # direct imports of the module and its own first level
            rows.append((int(m.group(1)) / 1e6, m.group(3)))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="also measure a batch of this many prompts (0: skip)")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-cold-start", action="store_true")
    args = ap.parse_args()
    if not args.model.is_file():
        sys.exit(f"model file not found: {args.model}")
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))  # for the cold-start subprocesses

    runners: dict[str, tuple[DecodeRun, DecodeRun | None]] = {
        "maxcli exact fp32": maxcli_runner(args.model, False, args.new_tokens, args.batch),
        "maxcli packed int4/bf16": maxcli_runner(args.model, True, args.new_tokens, args.batch),
    }
    if not args.skip_hf:
        runners["HF transformers fp32"] = hf_runner(args.model, args.new_tokens, args.batch)
    llama = llama_cpp_runner(args.model, args.new_tokens, args.threads)
    if llama is not None:
        runners["llama.cpp"] = (llama, None)

    single: dict[str, list[float]] = {k: [] for k in runners}
    batched: dict[str, list[float]] = {k: [] for k, (_, b) in runners.items() if b is not None}
    for _ in range(args.rounds):
        for name, (one, many) in runners.items():
            single[name].append(one())
            if many is not None:
                batched[name].append(many())

    ref = "HF transformers fp32" if "HF transformers fp32" in single else "maxcli exact fp32"
    print(f"\nthreads={args.threads} new_tokens={args.new_tokens} rounds={args.rounds} "
          f"llama.cpp={'yes' if llama else 'not importable'}")
    print(f"{'engine':<26}{'decode tok/s':>14}{'ms/token':>10}{'vs ' + ref:>30}")
    for name, runs in single.items():
        best = max(runs)
        print(f"{name:<26}{best:>14.1f}{1000 / best:>10.1f}{best / max(single[ref]):>29.2f}x")
    if batched:
        print(f"\nbatch of {args.batch}: {'engine':<18}{'tok/s':>10}{'vs ' + ref:>30}")
        for name, runs in batched.items():
            print(f"{'':<13}{name:<18}{max(runs):>10.1f}{max(runs) / max(batched[ref]):>29.2f}x")
    if not args.skip_cold_start:
        print("\ncold start: maxcli generate --prompt hi --max-new-tokens 1 (subprocess wall time)")
        for quantized in (False, True):
            print(f"  {'packed' if quantized else 'exact '}: {cold_start(args.model, quantized):.2f} s")
        print(f"slowest imports on the generate path ({GENERATE_PATH_IMPORTS}; cumulative s):")
        for seconds, module in slowest_imports(GENERATE_PATH_IMPORTS):
            print(f"  {seconds:6.3f}  {module}")


if __name__ == "__main__":
    main()
