"""Cold start of `maxcli generate`: process start to first token, and peak RSS, vs HF transformers.

Usage: python benchmarks/cold_start.py [--model FILE.gguf] [--runs N] [--max-new-tokens N] [--skip-hf] [--json]

Each run is a fresh subprocess. Time to first token is measured from the parent: from just before the
process is spawned to the arrival of the first byte the child writes on stdout (`maxcli generate`
streams a single prompt's text as it is produced, so that byte is the first token's text). Peak RSS is
the child's own ru_maxrss (os.wait4). One untimed warm-up run of each side comes first: it fills the
OS page cache and maxcli's tokenizer / config caches, as any earlier use of the model would have.

The transformers peer loads the same GGUF file (AutoTokenizer + AutoModelForCausalLM with gguf_file),
applies the same chat template, and prints the first generated token.

Also prints the RSS budget of issue 8: weights (float32, as maxcli loads GGUF) + KV cache bytes (the
cache `maxcli generate` allocates for one prompt) + 600 MB, and whether every maxcli run stayed in it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / ".cache" / "test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "What is the capital of France?"
RSS_SLACK = 600_000_000  # the "+ 600 MB" of the budget

HF_PEER = r"""
import sys
from pathlib import Path
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
p, prompt, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tok = AutoTokenizer.from_pretrained(p.parent, gguf_file=p.name)
model = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32).eval()
text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids
with torch.no_grad():
    out = model.generate(ids, max_new_tokens=n, do_sample=False)
sys.stdout.write(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
sys.stdout.flush()
"""


def run_once(cmd: list[str]) -> dict[str, float | str]:
    """Spawn cmd; seconds to its first stdout byte and to exit, peak RSS (bytes), CPU seconds, output."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(1)
    t_first = time.perf_counter()
    rest = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    t_exit = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not first:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): {err.decode()[-2000:]}")
    return {
        "ttft_s": t_first - t0,
        "exit_s": t_exit - t0,
        "peak_rss_bytes": usage.ru_maxrss * 1024,  # Linux reports KiB
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "text": (first + rest).decode(errors="replace").strip(),
    }


def rss_budget(model: Path) -> dict[str, int]:
    """Weights as loaded (float32), the KV cache a one-prompt `maxcli generate` allocates, and the budget."""
    import torch

    from maxcli.config import PipelineConfig
    from maxcli.kv_cache import KVCacheParams
    from maxcli.pipelines.lib.pipeline_model import kv_cache_pages
    from maxcli.weights import GGUFFile

    gguf = GGUFFile.open(model)
    weights = sum(4 * _numel(w.shape) for w in gguf.tensors.values())
    hf = gguf.hf_config()
    config = PipelineConfig(model_path=str(model)).model_copy(update={"max_batch_size": 1})
    params = KVCacheParams(
        dtype=getattr(torch, config.cache_dtype),
        num_layers=hf["num_hidden_layers"],
        n_kv_heads=hf["num_key_value_heads"],
        head_dim=hf["head_dim"],
        page_size=config.kv_cache.kv_cache_page_size,
    )
    max_seq_len = config.max_length or hf["max_position_embeddings"]
    kv = kv_cache_pages(config, params.bytes_per_page, max_seq_len, weights) * params.bytes_per_page
    return {"weights_bytes": weights, "kv_cache_bytes": kv, "budget_bytes": weights + kv + RSS_SLACK}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def summarize(runs: list[dict]) -> dict[str, float]:
    ttft = [r["ttft_s"] for r in runs]
    return {
        "ttft_min_s": min(ttft),
        "ttft_median_s": statistics.median(ttft),
        "exit_median_s": statistics.median(r["exit_s"] for r in runs),
        "cpu_median_s": statistics.median(r["cpu_s"] for r in runs),
        "peak_rss_max_bytes": max(r["peak_rss_bytes"] for r in runs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--skip-hf", action="store_true", help="Only measure maxcli.")
    ap.add_argument("--json", action="store_true", help="Print one JSON object instead of the table.")
    args = ap.parse_args()
    model = args.model.resolve()
    maxcli_cmd = [sys.executable, "-m", "maxcli", "generate", "--model", str(model), "--prompt", args.prompt,
                  "--max-new-tokens", str(args.max_new_tokens)]
    hf_cmd = [sys.executable, "-c", HF_PEER, str(model), args.prompt, "1"]

    sides = {"maxcli": maxcli_cmd} if args.skip_hf else {"maxcli": maxcli_cmd, "transformers": hf_cmd}
    results: dict[str, dict] = {}
    for name, cmd in sides.items():
        run_once(cmd)  # warm-up: page cache, tokenizer and config caches
        runs = [run_once(cmd) for _ in range(args.runs)]
        results[name] = {"summary": summarize(runs), "runs": runs}
    budget = rss_budget(model)
    peak = results["maxcli"]["summary"]["peak_rss_max_bytes"]
    report = {
        "model": str(model),
        "command": " ".join(maxcli_cmd[1:]),
        "runs": args.runs,
        "env": {"PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", ""), "cpus": os.cpu_count()},
        **{name: r["summary"] for name, r in results.items()},
        "text": results["maxcli"]["runs"][0]["text"],
        **budget,
        "rss_within_budget": peak <= budget["budget_bytes"],
    }
    if "transformers" in results:
        report["ttft_ratio_hf_over_maxcli"] = (
            results["transformers"]["summary"]["ttft_min_s"] / results["maxcli"]["summary"]["ttft_min_s"]
        )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    mb = 1e6
    print(f"model: {model}  runs: {args.runs} (+1 warm-up each)  cpus: {os.cpu_count()}")
    print(f"{'':14}{'TTFT min':>10}{'median':>10}{'exit med':>10}{'CPU med':>10}{'peak RSS':>12}")
    for name, r in results.items():
        s = r["summary"]
        print(f"{name:14}{s['ttft_min_s']:>9.3f}s{s['ttft_median_s']:>9.3f}s{s['exit_median_s']:>9.3f}s"
              f"{s['cpu_median_s']:>9.2f}s{s['peak_rss_max_bytes'] / mb:>9.0f} MB")
    if "ttft_ratio_hf_over_maxcli" in report:
        print(f"time to first token: maxcli is {report['ttft_ratio_hf_over_maxcli']:.1f}x faster than transformers")
    print(f"maxcli text: {report['text']!r}")
    print(f"RSS budget: weights {budget['weights_bytes'] / mb:.0f} MB + KV cache {budget['kv_cache_bytes'] / mb:.0f} MB"
          f" + 600 MB = {budget['budget_bytes'] / mb:.0f} MB; maxcli peak {peak / mb:.0f} MB -> "
          f"{'holds' if report['rss_within_budget'] else 'EXCEEDED'}")


if __name__ == "__main__":
    main()
