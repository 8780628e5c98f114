"""Speculative decoding (n-gram prompt lookup) vs plain decoding, single stream, greedy, on the real GGUF files.

Usage: python benchmarks/speculative.py [--models qwen,smollm2] [--rounds 2] [--json-out FILE]

Two workloads, each request alone in the engine:
- code editing: the prompt holds a function and asks for it back with one small change, so the answer
  repeats the prompt (issue target: >= 1.5x decode tok/s with ngram lookup on Qwen2.5-Coder);
- open questions whose answers do not repeat the prompt (target: no more than 5 % slower).
Decode tok/s = output tokens after the first / (last token time - first token time), summed over the
workload's requests; the figure per workload is the median over rounds of speculative / plain. Outputs are
also checked to be identical (greedy decoding is exact under speculation).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maxcli import LLM  # noqa: E402
from maxcli.interfaces import SamplingParams  # noqa: E402

MODELS = {
    "qwen": ROOT / ".cache" / "test-models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    "smollm2": ROOT / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
}
FUNCTIONS = [
    ('''def moving_average(values, window):
    """Average of each run of `window` consecutive values."""
    if window <= 0:
        raise ValueError("window must be positive")
    out = []
    total = sum(values[:window])
    out.append(total / window)
    for i in range(window, len(values)):
        total += values[i] - values[i - window]
        out.append(total / window)
    return out
''', "rename the variable `total` to `running_sum`"),
    ('''class Stack:
    """A last-in first-out stack backed by a list."""

    def __init__(self):
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        if not self.items:
            raise IndexError("pop from an empty stack")
        return self.items.pop()

    def peek(self):
        if not self.items:
            raise IndexError("peek at an empty stack")
        return self.items[-1]

    def __len__(self):
        return len(self.items)
''', "add a method `is_empty` that returns whether the stack has no items"),
    ('''def parse_config(lines):
    """Parse `key = value` lines into a dict, skipping blanks and # comments."""
    config = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"line {number}: expected key = value")
        key, value = line.split("=", 1)
        config[key.strip()] = value.strip()
    return config
''', "make it lower-case every key"),
]
OPEN = ["Write a short story about a lighthouse keeper who finds a message in a bottle.",
        "Explain how vaccines train the immune system, in plain words.",
        "Describe a walk through a busy market in Marrakesh."]


def workloads() -> dict[str, list[str]]:
    edit = [f"```python\n{code}```\nRewrite this code and {change}. Reply with the complete code only."
            for code, change in FUNCTIONS]
    return {"code_edit": edit, "open": OPEN}


def decode_figures(outs: list[Any]) -> tuple[int, float]:
    tokens = sum(o.metrics.output_tokens - 1 for o in outs)
    seconds = sum(o.metrics.total_s - o.metrics.ttft_s for o in outs)
    return tokens, seconds


def run(llm: LLM, texts: list[str], max_tokens: int) -> tuple[float, list[list[int]]]:
    sp = SamplingParams(temperature=0.0, max_new_tokens=max_tokens)
    outs = [llm.generate([t], sp, use_chat_template=True)[0] for t in texts]
    tokens, seconds = decode_figures(outs)
    return tokens / max(seconds, 1e-9), [o.token_ids for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen,smollm2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--num-speculative-tokens", type=int, default=3)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    figures: dict[str, Any] = {}
    for name in args.models.split(","):
        llms = {method: LLM(str(MODELS[name]), max_length=2048, max_batch_size=1, speculative_method=method,
                            num_speculative_tokens=args.num_speculative_tokens) for method in (None, "ngram")}
        for llm in llms.values():
            llm.generate(["warm up"], SamplingParams(max_new_tokens=8))
        for workload, texts in workloads().items():
            t0 = time.perf_counter()
            rounds, same = [], True
            spec_stats = llms["ngram"].engine.speculator.stats
            before = spec_stats.to_dict()
            for r in range(args.rounds):  # alternate the order: drift on a shared machine cancels out
                order = (None, "ngram") if r % 2 == 0 else ("ngram", None)
                result = {m: run(llms[m], texts, args.max_tokens) for m in order}
                rounds.append(result)
                same &= result[None][1] == result["ngram"][1]
            ratio = statistics.median(r["ngram"][0] / r[None][0] for r in rounds)
            after = spec_stats.to_dict()
            drafted = after["drafted_tokens"] - before["drafted_tokens"]
            accepted = after["accepted_tokens"] - before["accepted_tokens"]
            fig = {"plain_tok_s": statistics.median(r[None][0] for r in rounds),
                   "ngram_tok_s": statistics.median(r["ngram"][0] for r in rounds), "ratio": ratio,
                   "acceptance_rate": accepted / drafted if drafted else 0.0, "identical_outputs": same,
                   "seconds": time.perf_counter() - t0}
            figures[f"{name}/{workload}"] = fig
            print(f"{name:8s} {workload:10s} plain {fig['plain_tok_s']:6.1f} tok/s  ngram {fig['ngram_tok_s']:6.1f} "
                  f"tok/s  ratio {ratio:.3f}  acceptance {fig['acceptance_rate']:.2f}  identical {same}", flush=True)
        for llm in llms.values():
            llm.close()
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
