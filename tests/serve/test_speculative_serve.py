"""Speculative decoding behind the real server (SmolLM2 GGUF, ngram drafts) with the real openai client: streamed
chunks carry several tokens when drafts are accepted and concatenate to the non-streamed reply, which equals a
plain server's; logprobs cover every accepted token; stop strings cut the text; /metrics counts drafts."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import openai
import pytest

from tests.serve.conftest import ServerProcess, start_server

MODEL = "smollm2-spec"
CODE = "def add(a, b):\n    total = a + b\n    return total\n\ndef sub(a, b):\n    total = a - b\n    return total\n"
MESSAGES = [{"role": "user", "content": f"```python\n{CODE}```\nRepeat this code exactly, then stop."}]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    common = ["--model", str(smollm2_gguf), "--served-model-name", MODEL, "--max-length", "1024", "--max-batch-size", "4"]
    spec = start_server(tmp_path_factory, "spec", common + ["--speculative-method", "ngram", "--num-speculative-tokens", "3"])
    plain = start_server(tmp_path_factory, "plain", common)
    a, b = next(spec), next(plain)
    try:
        yield a, b
    finally:
        for gen in (spec, plain):
            gen.close()


def _client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_stream_logprobs_stop_and_metrics(servers: tuple[ServerProcess, ServerProcess]) -> None:
    spec_server, plain_server = servers
    spec, plain = _client(spec_server), _client(plain_server)
    kwargs = dict(model=MODEL, messages=MESSAGES, temperature=0, max_tokens=80)
    reference = plain.chat.completions.create(**kwargs, logprobs=True, top_logprobs=2)
    full = spec.chat.completions.create(**kwargs, logprobs=True, top_logprobs=2)
    assert full.choices[0].message.content == reference.choices[0].message.content
    assert full.usage.completion_tokens == reference.usage.completion_tokens
    tokens = full.choices[0].logprobs.content
    assert [t.token for t in tokens] == [t.token for t in reference.choices[0].logprobs.content]
    for got, want in zip(tokens, reference.choices[0].logprobs.content):
        assert abs(got.logprob - want.logprob) < 1e-3 and len(got.top_logprobs) == 2

    chunks = [c for c in spec.chat.completions.create(**kwargs, stream=True) if c.choices and c.choices[0].delta.content]
    assert "".join(c.choices[0].delta.content for c in chunks) == full.choices[0].message.content
    assert len(chunks) < full.usage.completion_tokens  # accepted drafts arrive together

    stop = spec.chat.completions.create(**kwargs, stop=["return"])
    assert stop.choices[0].message.content == full.choices[0].message.content.split("return")[0]
    assert stop.choices[0].finish_reason == "stop"

    drafted = spec_server.metric("maxcli_spec_decode_num_draft_tokens_total")
    accepted = spec_server.metric("maxcli_spec_decode_num_accepted_tokens_total")
    assert drafted > 0 and 0 < accepted <= drafted
    assert 'maxcli_spec_decode_acceptance_rate_per_position{position="0",replica="0"}' in spec_server.metric_text()
    assert spec_server.wait_metric("maxcli_kv_cache_used_pages", 0.0) == 0.0
