"""Regenerate the golden greedy output of the real SmolLM2 GGUF, computed by HF transformers.

transformers loads the GGUF (dequantized to float32) and greedily decodes the raw prompt (no chat
template, the tokenizer's default special tokens) for exactly 32 tokens, past the end-of-sequence token
(maxcli's ignore_eos), so every position is compared. The JSON records the file's sha256 so a
test can tell a different model file from a regression.
Usage: python scripts/make_golden.py [--model FILE.gguf] [--out tests/generation/golden/smollm2_capital.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
import transformers

from maxcli.weights.test_models import sha256_of

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "generation" / "golden" / "smollm2_capital.json"
PROMPT = "The capital of France is"
MAX_NEW_TOKENS = 32



def hf_greedy(gguf: Path, prompt: str, max_new_tokens: int) -> dict[str, Any]:
    """Prompt ids, greedy new ids and their text from transformers on the GGUF file in float32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    model.generation_config.eos_token_id = None  # ignore_eos (generate fills unset values from this one)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.eos_token_id,
        )
    new = out[0, ids.shape[1] :].tolist()
    return {
        "prompt_token_ids": ids[0].tolist(),
        "token_ids": new,
        "text": tokenizer.decode(new, skip_special_tokens=False),
    }


def golden_record(gguf: Path) -> dict[str, Any]:
    return {
        "model_file": gguf.name,
        "model_sha256": sha256_of(gguf),
        "prompt": PROMPT,
        "max_new_tokens": MAX_NEW_TOKENS,
        "decoding": "greedy, float32, no chat template, ignore_eos",
        **hf_greedy(gguf, PROMPT, MAX_NEW_TOKENS),
        "reference": f"transformers {transformers.__version__}, torch {torch.__version__}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="SmolLM2 GGUF (default: the test-model cache)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.model is None:
        from maxcli.weights.test_models import fetch_smollm2

        args.model = fetch_smollm2()
    if not args.model.is_file():
        parser.error(f"no such model file: {args.model}")
    record = golden_record(args.model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}: {record['text']!r}")


if __name__ == "__main__":
    main()
