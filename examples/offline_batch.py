"""The offline API: one model, a batch of prompts, per-prompt sampling settings.

Run: python examples/offline_batch.py [path/to/model]   (no path: the default SmolLM2 GGUF)
"""

import sys

import maxcli
from maxcli.interfaces import SamplingParams

llm = maxcli.LLM(model=sys.argv[1] if len(sys.argv) > 1 else None, max_length=1024)
prompts = ["The capital of France is", "Water boils at", "The three primary colors are"]
params = [
    SamplingParams(temperature=0.0, max_new_tokens=16),
    SamplingParams(temperature=0.7, top_p=0.9, seed=1, max_new_tokens=16),
    SamplingParams(temperature=0.0, max_new_tokens=16, stop=["."]),
]
for prompt, out in zip(prompts, llm.generate(prompts, params)):
    print(f"{prompt!r} -> {out.text!r} ({out.finish_reason}, {len(out.token_ids)} tokens)")
