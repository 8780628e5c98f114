"""Load time of a GGUF model: maxcli's pipeline vs HF transformers loading the same file, in one run.

Usage: python benchmarks/load_gguf.py [path/to/model.gguf]   (default: the SmolLM2 test model)

Each side runs in a fresh subprocess (cold imports included, as a user's first command would be), so
the numbers are process start -> model ready. Prints a table and the ratio.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

MAXCLI = r"""
import json, sys, time
t0 = time.perf_counter()
from maxcli.config import PipelineConfig
from maxcli.pipelines.lib.entrypoints import load_text_generation
import maxcli.architectures.llama3.arch, transformers.models.llama.configuration_llama  # the modules a load imports
t_import = time.perf_counter()
from maxcli.weights import GGUFFile
GGUFFile.open(sys.argv[1]).tensors
t_parse = time.perf_counter()
tokenizer, pipeline = load_text_generation(PipelineConfig(model_path=sys.argv[1], max_length=2048))
t_ready = time.perf_counter()
print(json.dumps({"import": t_import - t0, "parse": t_parse - t_import, "load": t_ready - t_import,
                  "ready": t_ready - t0}))
"""

HF = r"""
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
import transformers.models.llama.modeling_llama
t_import = time.perf_counter()
p = Path(sys.argv[1])
tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
model = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32)
t_ready = time.perf_counter()
print(json.dumps({"import": t_import - t0, "parse": float("nan"), "load": t_ready - t_import,
                  "ready": t_ready - t0}))
"""


def run(code: str, path: str) -> dict[str, float]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True).stdout
    d = json.loads(out.strip().splitlines()[-1])
    d["process"] = time.perf_counter() - t
    return d


def main() -> None:
    if len(sys.argv) > 1:
        path = sys.argv[1]
    else:
        from maxcli.weights.test_models import fetch_smollm2

        path = str(fetch_smollm2())
    run(MAXCLI, path)  # warm the OS page cache and maxcli's tokenizer cache once, untimed
    ours = run(MAXCLI, path)
    theirs = run(HF, path)
    print(f"model: {path}")
    print(f"{'':24}{'maxcli':>10}{'transformers':>14}")
    for key, label in (("import", "imports (s)"), ("load", "load after imports (s)"),
                       ("parse", "  of which GGUF parse (s)"), ("ready", "model ready (s)"), ("process", "whole process (s)")):
        print(f"{label:24}{ours[key]:>10.2f}{theirs[key]:>14.2f}")
    print(f"ratio (transformers / maxcli): load {theirs['load'] / ours['load']:.1f}x, "
          f"model ready {theirs['ready'] / ours['ready']:.1f}x")


if __name__ == "__main__":
    main()
