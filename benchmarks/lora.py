"""LoRA serving throughput: 16 concurrent requests spread over 4 adapters vs the same requests on the base
model, in one engine (continuous batching), greedy, on the real GGUF files (the base stays in its blocks).

Usage: python benchmarks/lora.py [--models smollm2,qwen] [--rank 16] [--rounds 2] [--json-out FILE]

The adapters are random PEFT folders (rank --rank, every attention and MLP projection, lora_B non-zero)
written from each model's shapes. Throughput = output tokens / wall time of the whole batch; the figure is
the median over rounds of adapters / base (issue target: >= 0.8x); the two runs of a round alternate in order.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from maxcli import LLM  # noqa: E402
from maxcli.interfaces import SamplingParams  # noqa: E402
from maxcli.pipelines import PIPELINE_REGISTRY, PipelineConfig  # noqa: E402

MODELS = {
    "smollm2": ROOT / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf",
    "qwen": ROOT / ".cache" / "test-models" / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PROMPTS = ["Explain how a hash map works.", "Write a haiku about rain.", "What is the capital of Peru?",
           "Describe photosynthesis in two sentences.", "List three uses of copper.", "Why is the sky blue?",
           "Summarize the plot of Hamlet.", "How do vaccines train the immune system?"]


def write_adapter(folder: Path, hf_config, rank: int, seed: int) -> Path:
    """A random PEFT LoRA folder for every projection of a Llama-shaped model."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    h, inter = hf_config.hidden_size, hf_config.intermediate_size
    heads, kv = hf_config.num_attention_heads, hf_config.num_key_value_heads
    d = getattr(hf_config, "head_dim", None) or h // heads
    shapes = {"q_proj": (h, heads * d), "k_proj": (h, kv * d), "v_proj": (h, kv * d), "o_proj": (heads * d, h),
              "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
    tensors = {}
    for layer in range(hf_config.num_hidden_layers):
        for name in TARGETS:
            part = "self_attn" if name in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            fan_in, fan_out = shapes[name]
            prefix = f"base_model.model.model.layers.{layer}.{part}.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) / fan_in ** 0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 0.01
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": rank, "lora_alpha": 2 * rank, "target_modules": list(TARGETS), "bias": "none"}))
    return folder


def run(llm: LLM, loras: list[str | None], max_new_tokens: int) -> tuple[float, int]:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(loras))]
    params = SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, ignore_eos=True)
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_chat_template=True, lora=loras)
    wall = time.perf_counter() - t0
    return wall, sum(len(o.token_ids) for o in outs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2,qwen")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--adapters", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json-out")
    args = ap.parse_args()
    report = {}
    for key in args.models.split(","):
        path = MODELS[key]
        hf = PIPELINE_REGISTRY.get_active_huggingface_config(PipelineConfig(model_path=str(path)).huggingface_weights_repo())
        with tempfile.TemporaryDirectory() as tmp:
            names = [f"a{i}" for i in range(args.adapters)]
            paths = [f"{n}={write_adapter(Path(tmp) / n, hf, args.rank, i)}" for i, n in enumerate(names)]
            llm = LLM(model=str(path), max_length=512, max_batch_size=args.requests, enable_lora=True,
                      lora_paths=paths, max_num_loras=args.adapters, max_lora_rank=args.rank)
            mixed = [names[i % len(names)] for i in range(args.requests)]
            run(llm, mixed, 4)  # warm-up: every code path once, at the full batch
            run(llm, [None] * args.requests, 4)
            base_tps, lora_tps = [], []
            for i in range(args.rounds):  # the order alternates, so a drift in speed does not land on one side
                for adapters in ((False, True) if i % 2 == 0 else (True, False)):
                    wall, n = run(llm, mixed if adapters else [None] * args.requests, args.max_new_tokens)
                    (lora_tps if adapters else base_tps).append(n / wall)
            llm.close()
        ratio = statistics.median(l / b for l, b in zip(lora_tps, base_tps))
        report[key] = {"base_tok_s": [round(x, 1) for x in base_tps], "lora_tok_s": [round(x, 1) for x in lora_tps],
                       "ratio": round(ratio, 3), "requests": args.requests, "adapters": args.adapters, "rank": args.rank,
                       "max_new_tokens": args.max_new_tokens}
        print(f"{key}: base {report[key]['base_tok_s']} tok/s, {args.adapters} adapters {report[key]['lora_tok_s']} tok/s, "
              f"ratio {ratio:.3f}", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
