"""OpenAI semantics of `maxcli serve` with the real SmolLM2 GGUF, driven by the real `openai` client."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import asyncio

import httpx
import openai
import pytest

from tests.serve.conftest import ServerProcess, start_server

MODEL = "smol"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[ServerProcess]:
    # The float32 path: these tests compare batched answers with solo ones token for token, which only
    # the batch-invariant reference path promises (tests/serve/test_serve_gguf_native.py serves the default).
    args = ["--model", str(smollm2_gguf), "--served-model-name", MODEL, "--max-length", "256",
            "--no-cpu-quantized-matmul"]
    yield from start_server(tmp_path_factory, "openai_api", args)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_chat_stream_matches_non_stream_at_temperature_zero(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=0)
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens <= 8 and reply.usage.prompt_tokens > 5
    stream = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [reply.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == reply.usage


def test_chat_logprobs_and_max_completion_tokens(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=CHAT, max_completion_tokens=5, temperature=0,
                                           logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    choice = reply.choices[0]
    assert choice.finish_reason == "length" and reply.usage.completion_tokens == 5
    content = choice.logprobs.content
    assert len(content) == 5 and "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert len(t.top_logprobs) == 3 and t.logprob <= 0.0
        assert t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        assert abs(t.top_logprobs[0].logprob - t.logprob) < 1e-4  # greedy: the chosen token is the top one


def test_completions_echo_and_logprobs(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    reply = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0, echo=True, logprobs=2)
    choice = reply.choices[0]
    assert choice.text.startswith(prompt) and len(choice.text) > len(prompt)
    lp = choice.logprobs
    n_prompt, n_out = reply.usage.prompt_tokens, reply.usage.completion_tokens
    visible = len(lp.tokens) - n_prompt
    assert n_out - 1 <= visible <= n_out  # a final eos token is not part of the text
    assert "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(v is not None and v <= 0.0 for v in lp.token_logprobs[1:])
    assert all(len(top) <= 2 for top in lp.top_logprobs[1:])
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    # the same prompt without echo generates the same continuation
    plain = client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0)
    assert prompt + plain.choices[0].text == choice.text


def test_completions_prompt_forms(client: openai.OpenAI) -> None:
    echoed = client.completions.create(model=MODEL, prompt="Hello", max_tokens=1, temperature=0, echo=True, logprobs=0)
    token_ids_reply = client.completions.create(model=MODEL, prompt=[[1, 2, 3], [4, 5]], max_tokens=2, temperature=0)
    assert len(token_ids_reply.choices) == 2 and token_ids_reply.usage.prompt_tokens == 5
    strings = client.completions.create(model=MODEL, prompt=["Hello", "Goodbye"], max_tokens=2, temperature=0, n=2)
    assert sorted(c.index for c in strings.choices) == [0, 1, 2, 3]
    # greedy choices of one prompt agree
    by_index = {c.index: c.text for c in strings.choices}
    assert by_index[0] == by_index[1] and by_index[2] == by_index[3]
    assert echoed.choices[0].text.startswith("Hello")


def test_n_choices_and_seeded_sampling(client: openai.OpenAI) -> None:
    kwargs = dict(model=MODEL, messages=CHAT, max_tokens=5, temperature=1.0, seed=1234, n=2,
                  extra_body={"ignore_eos": True})
    first = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert first.usage.completion_tokens == 10  # both choices counted; the prompt once
    single = client.chat.completions.create(**{**kwargs, "n": 1})
    assert single.usage.prompt_tokens == first.usage.prompt_tokens
    assert single.choices[0].message.content == first.choices[0].message.content  # choice 0 uses the seed itself


def test_stop_strings(client: openai.OpenAI) -> None:
    prompt = "1, 2, 3, 4, 5,"
    full = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0).choices[0].text
    assert len(full) > 4
    stop = full[2:4]
    cut = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, stop=[stop, "@@"])
    assert cut.choices[0].text == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"
    stream = client.completions.create(model=MODEL, prompt=prompt, max_tokens=8, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == full[: full.index(stop)]


def test_penalties_and_extras_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=CHAT, max_tokens=4, temperature=0.7, top_p=0.9, seed=7, frequency_penalty=0.5,
        presence_penalty=0.5,
        extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1, "min_tokens": 4, "stop_token_ids": [2]},
    )
    assert reply.usage.completion_tokens == 4 and reply.choices[0].finish_reason == "length"


def test_metrics_expose_engine_state(server: ServerProcess) -> None:
    text = httpx.get(f"{server.base_url}/metrics").text
    for name in ("maxcli_requests_total", "maxcli_time_to_first_token_seconds_bucket",
                 "maxcli_inter_token_latency_seconds_bucket", "maxcli_time_per_output_token_seconds_bucket",
                 "maxcli_num_requests_waiting", "maxcli_num_requests_running", "maxcli_kv_cache_used_pages",
                 "maxcli_prefix_cache_hit_rate", "maxcli_num_preemptions_total"):
        assert name in text, name
    assert 'route="/v1/chat/completions",status="200"' in text
    assert server.wait_metric("maxcli_kv_cache_used_pages", 0.0) == 0.0


# -- many clients at once ------------------------------------------------------------------------------

PROMPTS = ["Name a color.", "Count to five.", "What is 2+2?", "Say hello in French."]
NUM_CLIENTS = 32


def _async_client(server: ServerProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=180)


async def _stream_text(client: openai.AsyncOpenAI, prompt: str, max_tokens: int, stop_after: int | None = None) -> str:
    """Stream a greedy chat reply; with stop_after, close the connection after that many chunks."""
    stream = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens, temperature=0,
        stream=True, extra_body={"ignore_eos": True},
    )
    parts, finish = [], None
    async with stream:
        async for i, chunk in _enumerate(stream):
            if stop_after is not None and i == stop_after:
                return "disconnected"
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
    assert finish == "length"
    return "".join(parts)


async def _enumerate(stream: openai.AsyncStream) -> object:
    i = 0
    async for item in stream:
        yield i, item
        i += 1


def test_concurrent_streams_match_single_requests(server: ServerProcess) -> None:
    async def run() -> tuple[list[str], list[str]]:
        client = _async_client(server)
        refs = await asyncio.gather(*[
            client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=6,
                                           temperature=0, extra_body={"ignore_eos": True})
            for p in PROMPTS
        ])
        outs = await asyncio.gather(*[_stream_text(client, PROMPTS[i % 4], 6) for i in range(NUM_CLIENTS)])
        return [r.choices[0].message.content for r in refs], outs

    refs, outs = asyncio.run(run())
    assert all(refs)
    assert outs == [refs[i % 4] for i in range(NUM_CLIENTS)]


def test_disconnecting_clients_free_their_kv_pages(server: ServerProcess) -> None:
    async def run() -> list[str]:
        client = _async_client(server)
        return await asyncio.gather(*[
            _stream_text(client, PROMPTS[i % 4], 10, stop_after=3 if i % 4 == 3 else None) for i in range(NUM_CLIENTS)
        ])

    finished_before = server.metric("maxcli_e2e_request_latency_seconds_count")
    outs = asyncio.run(run())
    assert outs.count("disconnected") == NUM_CLIENTS // 4
    assert all(o and o != "disconnected" for i, o in enumerate(outs) if i % 4 != 3)
    assert server.wait_metric("maxcli_kv_cache_used_pages", 0.0) == 0.0
    assert server.metric("maxcli_num_requests_running") == 0.0
    # the disconnected requests were aborted, not run to their end
    finished = server.metric("maxcli_e2e_request_latency_seconds_count") - finished_before
    assert finished == NUM_CLIENTS - NUM_CLIENTS // 4


def test_non_streaming_client_that_gives_up_is_aborted(server: ServerProcess) -> None:
    finished_before = server.metric("maxcli_e2e_request_latency_seconds_count")
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=1.0))
    assert server.wait_metric("maxcli_num_requests_running", 0.0) == 0.0
    assert server.metric("maxcli_kv_cache_used_pages") == 0.0
    assert server.metric("maxcli_e2e_request_latency_seconds_count") == finished_before  # aborted, not finished
