"""Generate text from a model: streams to the terminal, then prints a metrics table (or JSON per prompt)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from maxcli.cli.inputs import collect_prompts, structured_options
from maxcli.cli.options import pipeline_options
from maxcli.config import PipelineConfig

PROCESS_START = time.perf_counter()  # module import time ~ process start (the CLI imports it first thing)


@pipeline_options
def generate(
    config: PipelineConfig,
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", metavar="TEXT", help="Prompt text (repeatable; '-' reads stdin)."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="File with one prompt per line."),
    chat_template: bool = typer.Option(
        True, "--chat-template/--no-chat-template", help="Wrap prompts in the model's chat template when it has one."
    ),
    logprobs: Optional[int] = typer.Option(None, "--logprobs", min=0, max=20, help="Return N top alternatives per token."),
    num_warmups: int = typer.Option(0, "--num-warmups", min=0, help="Untimed runs of the first prompt before the timed one."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per prompt instead of streaming text."),
    json_schema: Optional[str] = typer.Option(
        None, "--json-schema", metavar="FILE|JSON", help="Constrain the output to this JSON schema (a file or inline JSON)."
    ),
    regex: Optional[str] = typer.Option(None, "--regex", help="Constrain the output to match this regular expression."),
    choice: Optional[str] = typer.Option(None, "--choice", metavar="A,B,C", help="Constrain the output to one of these strings."),
    grammar: Optional[str] = typer.Option(
        None, "--grammar", metavar="FILE|TEXT", help="Constrain the output to a Lark or GBNF grammar (a file or inline)."
    ),
    lora: Optional[str] = typer.Option(
        None, "--lora", metavar="NAME", help="Run with this LoRA adapter (one of --lora-paths; needs --enable-lora)."
    ),
) -> None:
    texts = collect_prompts(prompt, prompt_file)
    if not texts:
        texts = ["Tell me a short fact about the ocean."]
    constraint = structured_options(json_schema, regex, choice, grammar)
    from maxcli.engine.llm import LLM

    # A one-shot run never batches more than its prompts: sizing the batch (and so the KV cache, which
    # holds max_batch_size sequences of max_length) to them saves allocating and zeroing the rest.
    config = config.model_copy(update={"max_batch_size": min(config.max_batch_size, len(texts))})
    llm = LLM.from_config(config)
    startup = time.perf_counter() - PROCESS_START
    params = llm.default_sampling_params(logprobs=logprobs, **constraint)
    for _ in range(num_warmups):
        llm.generate([texts[0]], params, use_chat_template=chat_template, lora=lora)

    stream = not as_json and len(texts) == 1
    with llm:  # closing stops tensor-parallel ranks in order, before interpreter teardown
        results = llm.generate(
            texts,
            params,
            use_chat_template=chat_template,
            lora=lora,
            on_text=(lambda i, delta: (sys.stdout.write(delta), sys.stdout.flush())) if stream else None,
        )
    if as_json:
        for r in results:
            d = r.to_dict()
            d["metrics"]["startup_s"] = round(startup, 4)
            print(json.dumps(d, ensure_ascii=False))
        return
    if stream:
        sys.stdout.write("\n")
    else:
        for i, r in enumerate(results):
            print(f"--- prompt {i}: {texts[i][:70]!r}\n{r.text}")
    _print_metrics(startup, results)


def _print_metrics(startup: float, results: list) -> None:
    from maxcli.cli.console import console
    from rich.table import Table

    table = Table(title="metrics", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    n_in = sum(r.metrics.prompt_tokens for r in results)
    n_out = sum(r.metrics.output_tokens for r in results)
    total = max(r.metrics.total_s for r in results)
    ttft = min(r.metrics.ttft_s for r in results)
    rows = [
        ("startup time", f"{startup:.3f} s"),
        ("time to first token", f"{ttft * 1e3:.1f} ms"),
        ("prompt tokens", str(n_in)),
        ("output tokens", str(n_out)),
        ("prompt eval throughput", f"{sum(r.metrics.prefill_tok_s for r in results):.1f} tok/s"),
        ("eval throughput", f"{n_out / max(total - ttft, 1e-9):.1f} tok/s"),
        ("total latency", f"{total:.3f} s"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console(stderr=True).print(table)

