"""16 prompts in one generate() call give each prompt exactly its greedy tokens when run alone, under
prefix caching on and off, preemption by recompute (small KV pool) and chunked prefill (small budget)."""

from __future__ import annotations

from pathlib import Path

import pytest

from maxcli.engine.llm import LLM

from .helpers import MAX_LENGTH, greedy, token_ids

NEW_TOKENS = 16
SHARED = (
    "You are a careful assistant. Answer in one short sentence, without lists, and do not repeat the "
    "question. Use plain words that a child could follow, and say so when you do not know. "
)
PROMPTS = [
    "Hi",
    "The capital of France is",
    SHARED + "What colour is the sky?",
    SHARED + "What colour is grass?",
    "1, 2, 3, 4,",
    SHARED + "Why do cats purr?",
    "Once upon a time",
    SHARED + SHARED + "Name a prime number.",
    "def fibonacci(n):",
    SHARED + "What is water made of?",
    "The quick brown fox",
    SHARED + SHARED + "Name a large river.",
    "Translate to French: good morning",
    SHARED + "How many legs does a spider have?",
    "Q: What is 2 + 2?\nA:",
    SHARED + SHARED + "Name a planet.",
]


@pytest.fixture(scope="module")
def solo_tokens(native_llm: LLM) -> list[list[int]]:
    """Each prompt alone, prefix caching off (native_llm): nothing shared with any other sequence."""
    assert not native_llm.engine.pipeline.kv_manager.enable_prefix_caching
    return [native_llm.generate(p, greedy(NEW_TOKENS))[0].token_ids for p in PROMPTS]


def batch_run(gguf: Path, warm_prefix: bool = False, **config: object) -> tuple[list[list[int]], LLM]:
    """All PROMPTS in one generate() on a fresh LLM; warm_prefix first runs a prompt that leaves the
    shared prefix in the cache (prompts admitted in the same step cannot share pages not yet written)."""
    config.setdefault("cpu_quantized_matmul", False)  # the float32 path is batch invariant; GGUF kernels are not
    llm = LLM(model=str(gguf), max_length=MAX_LENGTH, **config)
    if warm_prefix:
        llm.generate(SHARED + SHARED + "Say hello.", greedy(1))
    return token_ids(llm.generate(PROMPTS, greedy(NEW_TOKENS))), llm


def prompt_lengths(llm: LLM) -> list[int]:
    return [len(llm.tokenizer.delegate.encode(p)) for p in PROMPTS]


def assert_same(got: list[list[int]], want: list[list[int]]) -> None:
    bad = [i for i, (g, w) in enumerate(zip(got, want)) if g != w]
    assert not bad, f"prompts {bad} differ from their solo runs: " + "; ".join(
        f"{i}: {got[i]} != {want[i]}" for i in bad
    )


def test_prompts_cover_lengths_and_shared_prefixes(native_llm: LLM) -> None:
    lengths = prompt_lengths(native_llm)
    assert min(lengths) <= 3 and max(lengths) >= 80  # short, long and several pages of shared prefix


def test_batch_with_prefix_caching(smollm2_gguf: Path, solo_tokens: list[list[int]]) -> None:
    got, llm = batch_run(smollm2_gguf, warm_prefix=True)
    assert llm.engine.pipeline.kv_manager.prefix_cache_hits > 0  # the shared prefixes were reused
    assert_same(got, solo_tokens)


def test_batch_without_prefix_caching(native_llm: LLM, solo_tokens: list[list[int]]) -> None:
    got = token_ids(native_llm.generate(PROMPTS, greedy(NEW_TOKENS)))
    assert native_llm.engine.pipeline.kv_manager.prefix_cache_hits == 0
    assert_same(got, solo_tokens)


def test_batch_under_preemption(smollm2_gguf: Path, solo_tokens: list[list[int]]) -> None:
    # 16 pages hold one full-length sequence (256 tokens) but not the batch's ~50 pages
    got, llm = batch_run(smollm2_gguf, kv_cache_num_pages=MAX_LENGTH // 16)
    assert llm.engine.scheduler.num_preemptions > 0
    assert_same(got, solo_tokens)


def test_batch_with_chunked_prefill(smollm2_gguf: Path, solo_tokens: list[list[int]]) -> None:
    # a 24-token step budget splits every long prompt across several steps, beside running decodes
    got, llm = batch_run(smollm2_gguf, max_batch_input_tokens=24)
    assert max(prompt_lengths(llm)) > 3 * 24
    assert_same(got, solo_tokens)
