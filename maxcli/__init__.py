"""maxcli: run, serve and extend open LLMs on torch (CPU) and Triton (CUDA)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The offline API pulls in torch; import it only when used so `maxcli --help` stays fast.
    if name == "LLM":
        from maxcli.engine.llm import LLM

        return LLM
    if name == "SamplingParams":
        from maxcli.interfaces import SamplingParams

        return SamplingParams
    raise AttributeError(f"module 'maxcli' has no attribute {name!r}")
