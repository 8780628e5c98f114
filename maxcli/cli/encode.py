"""Embed text with an embedding model: token counts, dimensions, first values, latency and throughput."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer

from maxcli.cli.inputs import collect_prompts
from maxcli.cli.options import pipeline_options
from maxcli.config import PipelineConfig
from maxcli.interfaces import InputError


@pipeline_options
def encode(
    config: PipelineConfig,
    prompt: Optional[list[str]] = typer.Option(None, "--prompt", metavar="TEXT", help="Text to embed (repeatable; '-' reads stdin)."),
    prompt_file: Optional[Path] = typer.Option(None, "--prompt-file", help="File with one text per line."),
    truncate: bool = typer.Option(False, "--truncate", help="Cut inputs longer than the model's limit instead of failing."),
    as_json: bool = typer.Option(False, "--json", help="Print the full vectors as JSON."),
    output: Optional[Path] = typer.Option(None, "--output", help="Save the vectors to this .npy file."),
) -> None:
    texts = collect_prompts(prompt, prompt_file)
    if not texts:
        raise InputError("nothing to encode: give --prompt TEXT or --prompt-file FILE")
    from maxcli.pipelines.lib.entrypoints import load_embeddings_pipeline

    t0 = time.perf_counter()
    pipeline = load_embeddings_pipeline(config, truncate=truncate)
    startup = time.perf_counter() - t0
    t1 = time.perf_counter()
    vectors, token_counts = pipeline.embed_with_counts(texts)
    latency = time.perf_counter() - t1
    if output is not None:
        import numpy as np

        np.save(output, vectors)
    if as_json:
        print(json.dumps({
            "model": config.model_name,
            "embeddings": [
                {"index": i, "num_tokens": n, "embedding": v.tolist()} for i, (n, v) in enumerate(zip(token_counts, vectors))
            ],
            "metrics": {"startup_s": startup, "latency_s": latency, "inputs_per_s": len(texts) / max(latency, 1e-9)},
        }))
        return
    from maxcli.cli.console import console
    from rich.table import Table

    table = Table(title=f"embeddings ({config.model_name})")
    for col in ("#", "tokens", "dim", "first values", "text"):
        table.add_column(col, overflow="fold")
    for i, (n, v) in enumerate(zip(token_counts, vectors)):
        table.add_row(str(i), str(n), str(v.shape[-1]), " ".join(f"{x:+.4f}" for x in v[:4]), texts[i][:60])
    out = console()
    out.print(table)
    out.print(
        f"startup {startup:.2f} s · latency {latency * 1e3:.1f} ms · "
        f"{len(texts) / max(latency, 1e-9):.1f} inputs/s · {sum(token_counts) / max(latency, 1e-9):.0f} tokens/s"
        + (f" · saved {output}" if output else "")
    )
