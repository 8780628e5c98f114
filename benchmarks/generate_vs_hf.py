"""Generation speed: maxcli's native engine vs HF transformers' generate on the same GGUF, in one run.

Both sides run greedy in float32 on the same dequantized file, in the same process and thread count, and
always produce the full number of new tokens (maxcli ignore_eos; HF with eos unset). Two workloads:
- single stream: one prompt, N new tokens; decode tok/s = (N - 1) / (last token time - first token time);
- batch: B prompts of ~P tokens, N new tokens each; HF pads on the left and runs one generate call,
  maxcli takes all prompts in one generate() (continuous batching); throughput = B * N / wall time.
Usage: python benchmarks/generate_vs_hf.py [--model FILE.gguf] [--quick] [--batch 64] [--new-tokens 128]
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from maxcli.engine.llm import LLM
from maxcli.interfaces import SamplingParams

WORDS = (
    "river mountain city engine garden window paper music silver morning ocean forest light stone bridge "
    "market winter summer teacher doctor story number village train island planet rain road question"
).split()


@dataclass
class Figures:
    single_decode_tok_s: float
    single_ttft_s: float
    batch_tok_s: float
    batch_wall_s: float
    single_tokens: list[int]


def make_prompts(tokenizer: Any, count: int, prompt_tokens: int, seed: int = 0) -> list[str]:
    """Deterministic word prompts cut to about `prompt_tokens` tokens each."""
    rng = random.Random(seed)
    prompts = []
    for _ in range(count):
        ids = tokenizer.encode(" ".join(rng.choices(WORDS, k=prompt_tokens * 2)))[:prompt_tokens]
        prompts.append(tokenizer.decode(ids))
    return prompts


def run_native(llm: LLM, single: str, batch: list[str], new_tokens: int) -> Figures:
    params = SamplingParams(temperature=0.0, max_new_tokens=new_tokens, ignore_eos=True)
    llm.generate(single, SamplingParams(temperature=0.0, max_new_tokens=4))  # warm-up
    one = llm.generate(single, params)[0]
    start = time.perf_counter()
    outs = llm.generate(batch, params)
    wall = time.perf_counter() - start
    assert all(len(o.token_ids) == new_tokens for o in outs)
    return Figures(one.metrics.decode_tok_s, one.metrics.ttft_s, len(batch) * new_tokens / wall, wall, one.token_ids)


class TokenClock:
    """A generate() streamer that stamps each put(): the first holds the prompt, then one per new token."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


def hf_generate(model: Any, enc: dict[str, torch.Tensor], new_tokens: int, streamer: Any = None) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(**enc, do_sample=False, max_new_tokens=new_tokens, streamer=streamer)


def run_hf(model: Any, tokenizer: Any, single: str, batch: list[str], new_tokens: int) -> Figures:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config.eos_token_id = None  # always new_tokens tokens, as maxcli's ignore_eos
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    enc_one = tokenizer([single], return_tensors="pt")
    hf_generate(model, enc_one, 4)  # warm-up
    clock = TokenClock()
    start = time.perf_counter()
    out = hf_generate(model, enc_one, new_tokens, streamer=clock)
    assert len(clock.stamps) == new_tokens + 1  # stamps[0] is the prompt, before any forward
    ttft, decode_s = clock.stamps[1] - start, clock.stamps[-1] - clock.stamps[1]
    enc = tokenizer(batch, return_tensors="pt", padding=True)
    start = time.perf_counter()
    hf_generate(model, enc, new_tokens)
    wall = time.perf_counter() - start
    tokens = out[0, enc_one["input_ids"].shape[1] :].tolist()
    return Figures((new_tokens - 1) / decode_s, ttft, len(batch) * new_tokens / wall, wall, tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the SmolLM2 test model)")
    parser.add_argument("--quick", action="store_true", help="16 prompts and 32 new tokens instead of 64 and 128")
    parser.add_argument("--batch", type=int, default=None, help="prompts in the batch workload (default 64)")
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per prompt (default 128)")
    parser.add_argument("--prompt-tokens", type=int, default=100)
    args = parser.parse_args()
    batch_size = args.batch or (16 if args.quick else 64)
    new_tokens = args.new_tokens or (32 if args.quick else 128)
    if args.model is None:
        from maxcli.weights.test_models import fetch_smollm2

        args.model = fetch_smollm2()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model.parent, gguf_file=args.model.name)
    prompts = make_prompts(tokenizer, batch_size, args.prompt_tokens)
    single = prompts[0]
    max_length = args.prompt_tokens + new_tokens + 16
    llm = LLM(model=str(args.model), max_length=max_length, max_batch_size=max(batch_size, 1))
    native = run_native(llm, single, prompts, new_tokens)
    del llm
    model = AutoModelForCausalLM.from_pretrained(args.model.parent, gguf_file=args.model.name, dtype=torch.float32)
    hf = run_hf(model.eval(), tokenizer, single, prompts, new_tokens)

    same = sum(a == b for a, b in zip(native.single_tokens, hf.single_tokens))
    print(f"model {args.model.name}, float32 on CPU, torch threads {torch.get_num_threads()}")
    print(f"single stream: {new_tokens} new tokens; batch: {batch_size} prompts x ~{args.prompt_tokens} tokens, "
          f"{new_tokens} new each; greedy single-stream tokens identical: {same}/{new_tokens}")
    rows = [
        ("single-stream decode tok/s", native.single_decode_tok_s, hf.single_decode_tok_s),
        ("single-stream TTFT s", native.single_ttft_s, hf.single_ttft_s),
        (f"batch-{batch_size} output tok/s", native.batch_tok_s, hf.batch_tok_s),
        (f"batch-{batch_size} wall s", native.batch_wall_s, hf.batch_wall_s),
    ]
    print(f"| {'metric':<28} | {'maxcli':>10} | {'HF':>10} | {'maxcli/HF':>9} |")
    print(f"|{'-' * 30}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
    for name, a, b in rows:
        print(f"| {name:<28} | {a:>10.3f} | {b:>10.3f} | {a / b:>9.2f} |")


if __name__ == "__main__":
    main()
