"""List the registered architectures: name, task, encodings with their KV strategies, example repos."""

from __future__ import annotations

import json
from typing import Optional

import typer



def list_archs(
    as_json: bool = typer.Option(False, "--json", help="Print MAX's JSON shape instead of a table."),
    custom_architectures: Optional[list[str]] = typer.Option(
        None, "--custom-architectures", metavar="PATH", help="Folder or module.path whose ARCHITECTURES list is registered (repeatable)."
    ),
) -> None:
    from maxcli.pipelines import PIPELINE_REGISTRY
    from maxcli.pipelines.lib.custom import register_custom_architectures

    register_custom_architectures(list(custom_architectures or []), PIPELINE_REGISTRY)
    archs = PIPELINE_REGISTRY.all()
    if as_json:
        payload: dict[str, dict] = {"architectures": {}}
        for a in archs:
            key = a.name if payload["architectures"].get(a.name) is None else f"{a.name}[{a.task}]"
            payload["architectures"][key] = a.describe()
        print(json.dumps(payload, indent=2))
        return
    from maxcli.cli.console import console
    from rich.table import Table

    table = Table(title="maxcli architectures", show_lines=True)
    for col in ("Architecture", "Task", "Encodings (KV strategies)", "Example repos", "Weights", "Multi-GPU"):
        table.add_column(col, overflow="fold")
    for a in archs:
        d = a.describe()
        encs = "\n".join(
            f"{e}{' (default)' if e == d['default_encoding'] else ''}: {', '.join(s)}"
            for e, s in d["supported_encodings"].items()
        )
        table.add_row(
            a.name, d["task"], encs, "\n".join(d["example_repo_ids"]), ", ".join(d["weight_formats"]),
            "yes" if a.multi_gpu_supported else "no",
        )
    console().print(table)
