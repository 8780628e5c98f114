"""compare.py's targets and tables: issue 18's "Done when" as rows of (target, measured, verdict)."""

from __future__ import annotations

import statistics
from typing import Any

MB = 1e6
DEFAULT = "maxcli default"
LLAMA = "llama.cpp"
COLD_START_S = 2.0
BATCH_VS_VLLM = 1.2


def stats(values: list[float]) -> dict[str, Any]:
    return {"best": max(values), "median": statistics.median(values), "rounds": values} if values else {}


def verdict(ok: bool | None, distance: str) -> str:
    if ok is None:
        return f"not measured ({distance})"
    return "met" if ok else f"not met ({distance})"


def _ratio_row(target: str, fig: dict[str, Any], unit: str, need: float = 1.0) -> tuple[str, str, str]:
    """maxcli default vs llama.cpp on one measure (best of rounds decides; the median ratio is shown)."""
    m, llama = fig.get(DEFAULT, {}), fig.get(LLAMA, {})
    if not m or not llama:
        why = "maxcli" if not m else "llama.cpp"
        return target, "-", verdict(None, f"no {why} figure")
    r, rm = m["best"] / llama["best"], m["median"] / llama["median"]
    measured = f"{m['best']:.1f} vs {llama['best']:.1f} {unit}: {r:.2f}x (median {rm:.2f}x)"
    return target, measured, verdict(r >= need, f"{r:.2f}x of {need:.1f}x")


def rss_row(target: str, peak: int | None, budget: dict[str, int], error: str | None = None) -> tuple[str, str, str]:
    if peak is None or error:
        return target, "-", verdict(None, error or "no run")
    over = peak - budget["budget_bytes"]
    return (target, f"{peak / MB:.0f} / {budget['budget_bytes'] / MB:.0f} MB",
            verdict(over <= 0, f"{over / MB:.0f} MB over"))


def model_rows(fig: dict[str, Any], args: Any) -> list[tuple[str, str, str]]:
    rows = [
        _ratio_row(f"decode ({args.new_tokens} tok) >= 1.0x llama.cpp", fig.get("decode", {}), "tok/s"),
        _ratio_row(f"prefill {args.prefill_tokens} >= 1.0x llama.cpp", fig.get("prefill", {}), "tok/s"),
    ]
    batch = fig.get("batch")
    if batch is not None:
        m, v = batch.get(DEFAULT, {}), batch.get("vLLM-CPU", {})
        target = f"batch {args.batch} x (~100, {args.batch_new_tokens}) >= {BATCH_VS_VLLM}x vLLM-CPU"
        if m and v:
            r = m["best"] / v["best"]
            rows.append((target, f"{m['best']:.0f} vs {v['best']:.0f} out tok/s: {r:.2f}x",
                         verdict(r >= BATCH_VS_VLLM, f"{r:.2f}x of {BATCH_VS_VLLM}x")))
        else:
            rows.append((target, "-", verdict(None, batch.get("note", "no maxcli or vLLM-CPU figure"))))
    cold = fig.get("cold", {})
    rows.append(rss_row("peak RSS <= file + KV + 600 MB", cold.get("peak_rss_max_bytes"), fig["budget"],
                        cold.get("error")))
    if cold.get("ttft_median_s") is not None:
        med = cold["ttft_median_s"]
        rows.append(("cold start <= 2 s (median)", f"{med:.2f} s (best {cold['ttft_min_s']:.2f} s)",
                     verdict(med <= COLD_START_S, f"{med - COLD_START_S:.2f} s over")))
    else:
        rows.append(("cold start <= 2 s (median)", "-", verdict(None, cold.get("error", "no run"))))
    return rows


def big_rows(fig: dict[str, Any], args: Any) -> list[tuple[str, str, str]]:
    gen = fig.get("generate", {})
    n = gen.get("output_tokens")
    rows = [(f"generates {args.generate_tokens_7b} tokens", f"{n} tokens" if n is not None else "-",
             verdict(None, gen.get("error", "no run")) if n is None
             else verdict(n == args.generate_tokens_7b, f"{n} of {args.generate_tokens_7b}")),
            rss_row("peak RSS <= file + KV + 600 MB", gen.get("peak_rss_bytes"), fig["budget"], gen.get("error")),
            _ratio_row(f"decode ({args.new_tokens_7b} tok) >= 1.0x llama.cpp", fig.get("decode", {}), "tok/s")]
    return rows


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    print(f"\n{title}")
    print(f"  {'target':<44}{'measured':<46}verdict")
    for target, measured, v in rows:
        print(f"  {target:<44}{measured:<46}{v}")


def print_engine_figures(title: str, fig: dict[str, Any], hows: dict[str, str], unit: str = "tok/s") -> None:
    """One line per engine (best, median, rounds, ratio to llama.cpp) and the command that made it."""
    if title:
        print(f"\n{title}")
    llama = fig.get(LLAMA, {}).get("best")
    for label, s in fig.items():
        if not isinstance(s, dict) or "best" not in s:
            continue
        ratio = f"  {s['best'] / llama:5.2f}x llama.cpp" if llama and label != LLAMA else ""
        rounds = ", ".join(f"{v:.1f}" for v in s["rounds"])
        print(f"  {label:<24}best {s['best']:8.1f}  median {s['median']:8.1f} {unit}{ratio}   (rounds: {rounds})")
        if "greedy_prefix_agreeing_with_llama_cpp" in s:
            print(f"    greedy tokens equal to llama.cpp's for the first {s['greedy_prefix_agreeing_with_llama_cpp']}")
        if label in hows:
            print(f"    how: {hows[label]}")
