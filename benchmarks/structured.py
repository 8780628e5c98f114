"""Constrained vs unconstrained decode speed on the same prompts (structured outputs, llguidance masks).

Usage: python benchmarks/structured.py [--models qwen,smollm2] [--rounds 5] [--json-out FILE]

For each real GGUF model and each concurrency (1 and 16 requests in one batch), a first constrained run
(greedy, not timed) fixes each reply's length; then every round runs the prompts twice on the default CPU
path: under the JSON schema, and unconstrained with every request held to exactly its constrained reply's
length (min_tokens = max_tokens, eos ignored), so both runs decode the same number of tokens at the same
sequence lengths. The order of the two alternates from round to round, so a drift in the machine's speed
does not land on one side. Decode tok/s per run = output tokens after each request's first / (last token
time - first token time), summed over requests for the batch. The figure is the median over rounds of
constrained / unconstrained (issue target: >= 0.9x); the ratio of each side's fastest round is printed
beside it (interference from other work only slows a run down).
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
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "email": {"type": "string", "maxLength": 60},
        "skills": {"type": "array", "items": {"type": "string", "maxLength": 30}, "minItems": 2, "maxItems": 5},
        "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 60},
                                                     "city": {"type": "string", "maxLength": 40},
                                                     "country": {"enum": ["France", "Peru", "Japan", "Kenya", "Canada"]}},
                    "required": ["street", "city", "country"], "additionalProperties": False},
    },
    "required": ["name", "age", "email", "skills", "address"],
    "additionalProperties": False,
}
TOPICS = ["a baker", "a pilot", "a violinist", "a chemist", "a farmer", "a sailor", "a nurse", "a judge",
          "a miner", "a poet", "a chef", "a coder", "a diver", "a tailor", "a monk", "a racer"]


def prompts(n: int) -> list[str]:
    return [f"Invent a profile of {TOPICS[i % len(TOPICS)]} as JSON with name, age, email, skills and address."
            for i in range(n)]


def decode_tok_s(outs: list[Any]) -> float:
    """Batch decode throughput: tokens after each request's first over the span from the earliest first
    token to the latest last token."""
    start = min(o.metrics.ttft_s for o in outs)
    end = max(o.metrics.total_s for o in outs)
    return sum(o.metrics.output_tokens - 1 for o in outs) / max(end - start, 1e-9)


def reply_lengths(llm: LLM, n: int, max_tokens: int) -> list[int]:
    outs = llm.generate(prompts(n), SamplingParams(max_new_tokens=max_tokens, temperature=0.0, json_schema=SCHEMA),
                        use_chat_template=True)
    return [len(o.token_ids) for o in outs]


def one_round(llm: LLM, lengths: list[int], max_tokens: int, constrained_first: bool) -> dict[str, float]:
    texts = prompts(len(lengths))

    def constrained() -> list[Any]:
        return llm.generate(texts, SamplingParams(max_new_tokens=max_tokens, temperature=0.0, json_schema=SCHEMA),
                            use_chat_template=True)

    def free() -> list[Any]:
        return llm.generate(texts, [SamplingParams(max_new_tokens=k, min_new_tokens=k, ignore_eos=True, temperature=0.0)
                                    for k in lengths], use_chat_template=True)

    if constrained_first:
        outs, free_outs = constrained(), free()
    else:
        free_outs = free()
        outs = constrained()
    if [len(o.token_ids) for o in outs] != lengths:
        raise SystemExit("greedy constrained replies changed length between runs: the two sides would differ")
    valid = sum(1 for o in outs if _valid(o.text))
    return {"constrained_tok_s": decode_tok_s(outs), "unconstrained_tok_s": decode_tok_s(free_outs),
            "tokens": float(sum(lengths)), "valid_json": float(valid)}


def _valid(text: str) -> bool:
    try:
        import jsonschema

        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    except Exception:  # noqa: BLE001 - a reply cut by max_tokens, counted as invalid
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="qwen,smollm2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrency", default="1,16")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    figures: dict[str, Any] = {}
    for name in args.models.split(","):
        # Prefix caching off: a later run would prefill only uncached tails, on the kernels' int8 path, and
        # greedy replies could change length between the runs the two sides are held to.
        llm = LLM(model=str(MODELS[name]), max_batch_size=16, max_length=1024, enable_prefix_caching=False)
        llm.generate(["warm up"], SamplingParams(max_new_tokens=4, json_object=True))  # llguidance tokenizer, kernels
        for n in (int(c) for c in args.concurrency.split(",")):
            t0 = time.perf_counter()
            lengths = reply_lengths(llm, n, args.max_tokens)
            rounds = [one_round(llm, lengths, args.max_tokens, i % 2 == 0) for i in range(args.rounds)]
            ratio = statistics.median(r["constrained_tok_s"] / r["unconstrained_tok_s"] for r in rounds)
            best = max(r["constrained_tok_s"] for r in rounds) / max(r["unconstrained_tok_s"] for r in rounds)
            fig = {
                "constrained_tok_s": statistics.median(r["constrained_tok_s"] for r in rounds),
                "unconstrained_tok_s": statistics.median(r["unconstrained_tok_s"] for r in rounds),
                "ratio": ratio, "ratio_of_fastest": best, "round_ratios": [r["constrained_tok_s"] / r["unconstrained_tok_s"] for r in rounds],
                "tokens_per_round": rounds[0]["tokens"],
                "valid_json": f"{int(rounds[0]['valid_json'])}/{n}", "seconds": time.perf_counter() - t0,
            }
            figures[f"{name}/{n}"] = fig
            print(f"{name:8s} x{n:<3d} constrained {fig['constrained_tok_s']:7.1f} tok/s  unconstrained "
                  f"{fig['unconstrained_tok_s']:7.1f} tok/s  ratio {ratio:.3f} (fastest rounds {best:.3f})  ({fig['valid_json']} valid, "
                  f"{int(fig['tokens_per_round'])} tokens a run)", flush=True)
        llm.close()
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
