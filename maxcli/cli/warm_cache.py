"""Resolve a model, download what is missing, validate and load its weights once, and print a summary."""

from __future__ import annotations

import json
import time

import typer

from maxcli.cli.options import pipeline_options
from maxcli.config import PipelineConfig


@pipeline_options
def warm_cache(
    config: PipelineConfig,
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    from maxcli.pipelines.lib.entrypoints import warm_model_cache

    t0 = time.perf_counter()
    summary = warm_model_cache(config)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    if as_json:
        print(json.dumps(summary, indent=2))
        return
    from maxcli.cli.console import console
    from rich.table import Table

    table = Table(title=f"warm-cache: {summary['model']}", show_header=False)
    table.add_column("key", style="bold")
    table.add_column("value", overflow="fold")
    for key in ("architecture", "task", "encoding", "weights_format", "cache_dir", "num_tensors", "total_bytes", "seconds"):
        table.add_row(key, str(summary.get(key)))
    for f in summary["files"]:
        table.add_row("file", f"{f['path']} ({f['bytes'] / 1e6:.1f} MB)")
    console().print(table)
