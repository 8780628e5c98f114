"""`maxcli serve --data-parallel-degree 2`: two engine replicas behind one server on the real SmolLM2 GGUF.
Concurrent requests are spread over both replicas (visible per replica in /metrics) and each answer is the
one a lone request gets; prompts sharing an opening stick to one replica (prefix affinity)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Iterator

import openai
import pytest

from tests.serve.conftest import ServerProcess, start_server

MODEL = "smol-dp"
PROMPTS = [f"Write one sentence about the number {n}." for n in (3, 7, 11, 19, 23, 42)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[ServerProcess]:
    # The float32 path: these tests compare batched answers with solo ones token for token, which only
    # the batch-invariant reference path promises (tests/serve/test_serve_gguf_native.py serves the default).
    args = ["--model", str(smollm2_gguf), "--served-model-name", MODEL, "--max-length", "256",
            "--no-cpu-quantized-matmul",
            "--data-parallel-degree", "2"]
    yield from start_server(tmp_path_factory, "data_parallel", args)


def routed(server: ServerProcess) -> dict[str, float]:
    text = server.metric_text()
    return {m[0]: float(m[1]) for m in re.findall(r'^maxcli_replica_requests_total\{replica="(\d+)"\} (\S+)$', text, re.M)}


def complete(client: openai.OpenAI, prompt: str) -> str:
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    return reply.choices[0].text


def test_concurrent_requests_use_both_replicas_with_solo_answers(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    solo = {p: complete(client, p) for p in PROMPTS}
    before = routed(server)

    async def all_at_once() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        replies = await asyncio.gather(*(aclient.completions.create(model=MODEL, prompt=p, max_tokens=10, temperature=0)
                                         for p in PROMPTS))
        return [r.choices[0].text for r in replies]

    assert asyncio.run(all_at_once()) == [solo[p] for p in PROMPTS]
    after = routed(server)
    assert set(after) == {"0", "1"}
    assert all(after[r] - before.get(r, 0) > 0 for r in after), (before, after)  # both replicas served some
    metrics = server.metric_text()
    for name in ("maxcli_kv_cache_total_pages", "maxcli_num_requests_running"):
        assert f'{name}{{replica="0"}}' in metrics and f'{name}{{replica="1"}}' in metrics


def test_shared_prefix_sticks_to_one_replica(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    system = "You are a terse assistant who answers in one line. " * 8
    chosen = set()
    for question in ("What is 2 + 2?", "Name a color.", "Name a fruit."):
        before = routed(server)
        client.chat.completions.create(model=MODEL, max_tokens=4, temperature=0,
                                       messages=[{"role": "system", "content": system},
                                                 {"role": "user", "content": question}])
        after = routed(server)
        chosen |= {r for r in after if after[r] != before.get(r, 0)}
    assert len(chosen) == 1
