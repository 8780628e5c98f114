"""One native-engine LLM on the real SmolLM2 GGUF, shared by the generation test modules: the float32
reference path (HF parity, batch invariance); the GGUF-native default has its own tests (tests/perf)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxcli.engine.llm import LLM

from .helpers import MAX_LENGTH, NUM_PAGES


@pytest.fixture(scope="session")
def native_llm(smollm2_gguf: Path) -> LLM:
    return LLM(
        model=str(smollm2_gguf),
        max_length=MAX_LENGTH,
        cpu_quantized_matmul=False,
        kv_cache={"kv_cache_num_pages": NUM_PAGES, "enable_prefix_caching": False},
    )
