"""Sampling on the real model through the offline API and the CLI: seeds, stop strings, limits, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maxcli.engine.llm import LLM
from maxcli.interfaces import InputError, SamplingParams

from .helpers import greedy

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "Write a sentence about the sea."


def seeded(seed: int, n: int = 16) -> SamplingParams:
    return SamplingParams(temperature=1.0, top_p=0.95, seed=seed, max_new_tokens=n, ignore_eos=True)


def test_same_seed_same_text_whatever_the_batch(native_llm: LLM) -> None:
    alone = native_llm.generate(PROMPT, seeded(7))[0]
    batch = native_llm.generate(
        ["Hi", PROMPT, "List three fruits:", PROMPT, "The year 1999 was", PROMPT],
        [seeded(1), seeded(7), greedy(16), seeded(7), SamplingParams(temperature=1.0, max_new_tokens=16), seeded(7, 4)],
    )
    assert batch[1].token_ids == alone.token_ids and batch[1].text == alone.text
    assert batch[3].token_ids == alone.token_ids  # the same prompt and seed twice in one batch
    assert batch[5].token_ids == alone.token_ids[:4]  # a seed's draws do not depend on the request's length
    assert native_llm.generate(PROMPT, seeded(8))[0].token_ids != alone.token_ids


def test_stop_string_cuts_the_text(native_llm: LLM) -> None:
    full = native_llm.generate(PROMPT, greedy(24, ignore_eos=True))[0]
    words = full.text.split()
    assert len(words) >= 4, full.text
    stop = words[2]  # a string the greedy text is known to contain, past its start
    cut = native_llm.generate(PROMPT, greedy(24, ignore_eos=True, stop=[stop]))[0]
    assert cut.text == full.text[: full.text.index(stop)]
    assert cut.finish_reason == "stop"
    assert len(cut.token_ids) < len(full.token_ids)
    assert cut.token_ids == full.token_ids[: len(cut.token_ids)]


@pytest.mark.parametrize("n", [1, 5])
def test_max_new_tokens_is_respected(native_llm: LLM, n: int) -> None:
    out = native_llm.generate(PROMPT, SamplingParams(temperature=1.0, seed=3, max_new_tokens=n, ignore_eos=True))[0]
    assert len(out.token_ids) == n and out.metrics.output_tokens == n
    assert out.finish_reason == "length"


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=-1),
        SamplingParams(max_new_tokens=-5),
        SamplingParams(top_p=0.0),
        SamplingParams(top_p=1.5),
        SamplingParams(top_p=-0.1),
    ],
    ids=["max_new_tokens=-1", "max_new_tokens=-5", "top_p=0", "top_p=1.5", "top_p=-0.1"],
)
def test_bad_sampling_params_raise_input_error(native_llm: LLM, params: SamplingParams) -> None:
    with pytest.raises(InputError) as info:
        native_llm.generate(PROMPT, params)
    assert "\n" not in str(info.value) and str(info.value)


def test_prompt_longer_than_max_length_raises_input_error(native_llm: LLM) -> None:
    long_prompt = "word " * (native_llm.config.max_length + 10)
    with pytest.raises(InputError, match="max_length") as info:
        native_llm.generate(long_prompt, greedy(4))
    assert "\n" not in str(info.value)
    ok = native_llm.generate(PROMPT, greedy(2, ignore_eos=True))[0]  # the engine is still usable
    assert len(ok.token_ids) == 2


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maxcli", "generate", *args], capture_output=True, text=True, timeout=240, cwd=ROOT
    )


@pytest.mark.parametrize(
    "flags",
    [["--top-p", "1.5"], ["--top-p", "0"], ["--max-new-tokens", "-2"]],
    ids=["top_p=1.5", "top_p=0", "max_new_tokens=-2"],
)
def test_cli_rejects_bad_sampling_flags(smollm2_gguf: Path, flags: list[str]) -> None:
    proc = run_cli("--model", str(smollm2_gguf), "--prompt", "hi", *flags)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]  # the one-line error closes the output
    assert flags[0].lstrip("-").replace("-", "_") in error.replace("-", "_")


def test_cli_rejects_prompt_longer_than_max_length(smollm2_gguf: Path) -> None:
    proc = run_cli("--model", str(smollm2_gguf), "--max-length", "16", "--prompt", "word " * 40)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "max_length" in proc.stderr.strip().splitlines()[-1]
