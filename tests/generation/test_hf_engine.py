"""`--engine huggingface`: transformers models behind the native scheduler and sampler give the native
engine's greedy tokens (tiny random Llama folder, real SmolLM2 GGUF), through preemption and chunking."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from maxcli.config import ConfigError, PipelineConfig
from maxcli.engine.llm import LLM
from maxcli.interfaces import InputError, RequestID, SamplingParams, TextGenerationInputs, TextGenerationRequest
from maxcli.pipelines.lib.hf_engine import HuggingFaceTextGenerationPipeline, load_huggingface_pipeline

from tiny_checkpoints import write_tiny_llama

from .helpers import MAX_LENGTH, greedy, token_ids

PROMPTS = [
    "Hi",
    "The capital of France is",
    "A long prompt about nothing in particular, written so that it spans more than two pages of sixteen "
    "tokens each, which makes chunked prefill and preemption matter for it.",
    "1, 2, 3,",
]
GOLDEN = Path(__file__).parent / "golden" / "smollm2_capital.json"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), smollm2_gguf, max_positions=MAX_LENGTH)


@pytest.fixture(scope="module")
def tiny_native_tokens(tiny_llama: Path) -> list[list[int]]:
    llm = LLM(model=str(tiny_llama), max_length=MAX_LENGTH)
    return token_ids(llm.generate(PROMPTS, greedy(12, ignore_eos=True)))


@pytest.fixture(scope="module")
def tiny_hf(tiny_llama: Path) -> LLM:
    return LLM(model=str(tiny_llama), engine="huggingface", max_length=MAX_LENGTH)


def test_tiny_llama_hf_engine_matches_native(tiny_hf: LLM, tiny_native_tokens: list[list[int]]) -> None:
    assert isinstance(tiny_hf.engine.pipeline, HuggingFaceTextGenerationPipeline)
    got = token_ids(tiny_hf.generate(PROMPTS, greedy(12, ignore_eos=True)))
    assert got == tiny_native_tokens


def test_tiny_llama_hf_engine_under_preemption_and_chunked_prefill(
    tiny_llama: Path, tiny_native_tokens: list[list[int]]
) -> None:
    llm = LLM(
        model=str(tiny_llama),
        engine="huggingface",
        max_length=64,
        kv_cache_num_pages=5,  # one full sequence (4 pages) fits, the running batch needs more: preemption
        max_batch_input_tokens=8,  # prompts arrive in chunks of at most 8 tokens
    )
    # the same prompts several times over, so that the pages run out while all of them decode
    outs = llm.generate(PROMPTS * 4, greedy(12, ignore_eos=True))
    assert llm.engine.scheduler.num_preemptions > 0
    assert token_ids(outs) == tiny_native_tokens * 4
    assert llm.engine.pipeline.num_request_caches == 0  # finished requests' DynamicCaches are gone


def test_hf_engine_logprobs_match_native(tiny_hf: LLM, tiny_llama: Path) -> None:
    native = LLM(model=str(tiny_llama), max_length=MAX_LENGTH)
    params = greedy(6, ignore_eos=True, logprobs=3, echo=True)
    want = native.generate(PROMPTS[1], params)[0]
    got = tiny_hf.generate(PROMPTS[1], params)[0]
    assert got.token_ids == want.token_ids
    for a, b in ((got.logprobs, want.logprobs), (got.prompt_logprobs, want.prompt_logprobs)):
        assert a is not None and b is not None
        assert a.token_log_probabilities == pytest.approx(b.token_log_probabilities, abs=1e-4)
        assert [sorted(t) for t in a.top_log_probabilities] == [sorted(t) for t in b.top_log_probabilities]
    assert len(got.prompt_logprobs.token_log_probabilities) == len(got.prompt_token_ids) - 1


def test_hf_engine_rejects_bad_input(tiny_hf: LLM, tiny_llama: Path) -> None:
    with pytest.raises(InputError):
        tiny_hf.generate("word " * (MAX_LENGTH + 5), greedy(2))
    with pytest.raises(InputError):
        tiny_hf.generate("hi", SamplingParams(top_p=2.0))
    with pytest.raises(ConfigError, match="max_length"):
        LLM(model=str(tiny_llama), engine="huggingface", max_length=MAX_LENGTH * 4)


def test_hf_engine_missing_model_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        LLM(model=str(tmp_path / "no-such-model"), engine="huggingface")
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_smollm2_gguf_hf_engine_matches_native_and_golden(smollm2_gguf: Path, native_llm: LLM) -> None:
    golden = json.loads(GOLDEN.read_text())
    hf = LLM(model=str(smollm2_gguf), engine="huggingface", max_length=MAX_LENGTH)
    prompts = [golden["prompt"], PROMPTS[2]]
    got = token_ids(hf.generate(prompts, greedy(8, ignore_eos=True)))
    want = token_ids(native_llm.generate(prompts, greedy(8, ignore_eos=True)))
    assert got == want
    assert got[0] == golden["token_ids"][:8]


def test_hf_pipeline_serves_the_seeds_execute_loop(tiny_llama: Path, tiny_native_tokens: list[list[int]]) -> None:
    """MAX's request-execution loop (claim, alloc, execute, release) on the huggingface pipeline."""
    config = PipelineConfig(model_path=str(tiny_llama), engine="huggingface", max_length=MAX_LENGTH)
    tokenizer, pipeline = load_huggingface_pipeline(config)
    kv = pipeline.kv_managers[0]
    request = TextGenerationRequest(request_id=RequestID(), prompt=PROMPTS[1], sampling_params=greedy(12, ignore_eos=True))
    ctx = asyncio.run(tokenizer.new_context(request))
    kv.claim(ctx.request_id)
    tokens: list[int] = []
    while not ctx.is_done:
        kv.alloc(ctx, num_steps=1)
        out = pipeline.execute(TextGenerationInputs(batches=[{ctx.request_id: ctx}], num_steps=1))
        tokens += out[ctx.request_id].tokens
    pipeline.release(ctx.request_id)
    assert tokens == tiny_native_tokens[1]
    assert not kv.contains(ctx.request_id) and pipeline.num_request_caches == 0
