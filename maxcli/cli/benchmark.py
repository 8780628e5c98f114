"""Benchmark a model: throughput and TTFT / TPOT / ITL / latency percentiles, offline or against a server.

Without --base-url the model loads in-process (same pipeline flags as `generate`) and the requests go
straight into the engine; with --base-url they are streamed to a running OpenAI-compatible server
(`maxcli serve`). Prompts are random tokens (--input-len, --output-len; --seed) or a ShareGPT JSON file
(--dataset). Every request ignores EOS, so it produces exactly its output length.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer

from maxcli.cli.options import pipeline_options
from maxcli.config import PipelineConfig


@pipeline_options
def benchmark(
    config: PipelineConfig,
    base_url: Optional[str] = typer.Option(
        None, "--base-url", help="Serving mode: URL of a running OpenAI-compatible server (http://host:port)."
    ),
    num_prompts: int = typer.Option(16, "--num-prompts", min=1, help="Number of requests to send."),
    input_len: Optional[int] = typer.Option(None, "--input-len", min=1, help="Prompt tokens of each random prompt [default: 128]."),
    output_len: Optional[int] = typer.Option(
        None, "--output-len", min=1, help="Tokens to generate per request [default: 64; --dataset: the reply's length]."
    ),
    dataset: Optional[Path] = typer.Option(
        None, "--dataset", help="ShareGPT-style JSON file: prompt = first human turn, output length = first gpt reply."
    ),
    request_rate: float = typer.Option(
        math.inf, "--request-rate", help="Requests per second (Poisson arrivals); inf sends all at once. [default: inf]",
        show_default=False,
    ),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", min=1, help="Most requests in flight at once."),
    num_warmups: int = typer.Option(1, "--num-warmups", min=0, help="Offline mode: untimed short requests before the run."),
    tokenizer: Optional[str] = typer.Option(
        None, "--tokenizer", help="Serving mode: tokenizer to build prompts with [default: --model, else the served model]."
    ),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="MAXCLI_API_KEY", help="Serving mode: bearer token."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    result_file: Optional[Path] = typer.Option(None, "--result-file", help="Also write the JSON result to this file."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw latency histograms and throughput over time (PNG)."),
) -> None:
    from maxcli.benchmark import BenchmarkError
    from maxcli.benchmark.runner import BenchmarkSpec, run_benchmark

    if dataset is not None and input_len is not None:
        raise typer.BadParameter("--dataset gives each prompt's length; drop --input-len", param_hint="--input-len")
    if math.isnan(request_rate) or request_rate <= 0:
        raise typer.BadParameter(f"must be > 0 (or inf), got {request_rate}", param_hint="--request-rate")
    if result_file is not None and not result_file.parent.is_dir():
        raise BenchmarkError(f"--result-file: folder {result_file.parent} does not exist")
    if plot is not None:
        from maxcli.benchmark.plot import require_matplotlib

        require_matplotlib(plot)
    seed = config.sampling.seed if config.sampling.seed is not None else 0
    spec = BenchmarkSpec(
        num_prompts=num_prompts, input_len=input_len, output_len=output_len, dataset=dataset,
        request_rate=request_rate, max_concurrency=max_concurrency, seed=seed, num_warmups=num_warmups,
        base_url=base_url, tokenizer=tokenizer, api_key=api_key,
    )
    run = run_benchmark(config, spec)
    result = run.result
    text = json.dumps(result)
    if result_file is not None:
        result_file.write_text(text + "\n")
    if as_json:
        print(text)
    else:
        _print_tables(result)
    if plot is not None:
        from maxcli.benchmark.plot import save_plot

        save_plot(plot, run.records, run.start, f"maxcli benchmark ({result['mode']}): {Path(result['model']).name}")
    if result["completed"] == 0:
        first = result["errors"][0]["message"] if result["errors"] else "no request finished"
        raise BenchmarkError(f"all {result['failed']} requests failed: {first}")


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.2f}{unit}"
    return f"{v}{unit}"


def _print_tables(r: dict[str, Any]) -> None:
    from rich.table import Table
    from rich.text import Text

    from maxcli.cli.console import console

    out = console()
    summary = Table(title=f"benchmark ({r['mode']})", show_header=True)
    summary.add_column("metric")
    summary.add_column("value", justify="right")
    rows = [
        ("model", r["model"]),
        ("dataset", r["dataset"]),
        ("requests completed / failed", f"{r['completed']} / {r['failed']}"),
        ("request rate / max concurrency", f"{r['request_rate']} / {r['max_concurrency'] or '-'}"),
        ("benchmark duration", _fmt(r["duration_s"], " s")),
        ("total input tokens", _fmt(r["total_input_tokens"])),
        ("total output tokens", _fmt(r["total_output_tokens"])),
        ("request throughput", _fmt(r["request_throughput"], " req/s")),
        ("input token throughput", _fmt(r["input_throughput"], " tok/s")),
        ("output token throughput", _fmt(r["output_throughput"], " tok/s")),
        ("total token throughput", _fmt(r["total_token_throughput"], " tok/s")),
    ]
    if "load_s" in r:
        rows.insert(1, ("model load time", _fmt(r["load_s"], " s")))
    spec = r.get("speculative_decoding")
    if spec is not None:
        per_position = ", ".join(f"{a:.2f}" for a in spec["acceptance_per_position"]) or "-"
        rows += [("drafted / accepted tokens", f"{spec['drafted_tokens']} / {spec['accepted_tokens']}"),
                 ("draft acceptance rate", _fmt(spec["acceptance_rate"])),
                 ("acceptance per draft position", per_position)]
    for k, v in rows:
        summary.add_row(k, str(v))
    out.print(summary)
    latency = Table(title="latency (ms)", show_header=True)
    latency.add_column("metric")
    for col in ("mean", "P50", "P90", "P99"):
        latency.add_column(col, justify="right")
    for key, label in (("ttft_ms", "time to first token"), ("tpot_ms", "time per output token"),
                       ("itl_ms", "inter-token latency"), ("e2el_ms", "end-to-end latency")):
        s = r[key]
        latency.add_row(label, *(_fmt(s[k]) for k in ("mean", "p50", "p90", "p99")))
    out.print(latency)
    for e in r["errors"]:
        out.print(Text(f"{e['count']} x {e['message']}", style="yellow"))
