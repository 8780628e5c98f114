"""Built-in architectures: one folder each, exporting ARCHITECTURES like a user's custom folder."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from maxcli.pipelines.lib.registry import PipelineRegistry

BUILTIN_PACKAGES = ("llama3", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "bert")


def register_builtin_architectures(registry: "PipelineRegistry") -> None:
    for pkg in BUILTIN_PACKAGES:
        module = importlib.import_module(f"maxcli.architectures.{pkg}")
        for arch in module.ARCHITECTURES:
            registry.register(arch, allow_override=True)
