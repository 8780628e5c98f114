"""A user architecture served with --custom-architectures (tiny random MyModelForCausalLM checkpoint),
checked against HF transformers; then SIGTERM drains the in-flight stream and the process exits cleanly."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest

from tests.serve.conftest import CUSTOM_ARCHITECTURES, ServerProcess, start_server

MODEL = "my-model"
DRAIN_TIMEOUT_S = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_custom_model: Path) -> Iterator[ServerProcess]:
    args = ["--model", str(tiny_custom_model), "--custom-architectures", str(CUSTOM_ARCHITECTURES),
            "--served-model-name", MODEL, "--quantization-encoding", "float32",
            "--drain-timeout", str(DRAIN_TIMEOUT_S)]
    yield from start_server(tmp_path_factory, "custom_arch", args)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_custom_architecture_answers_chat(client: openai.OpenAI, server: ServerProcess) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello!"}],
                                           max_tokens=4, temperature=0)
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert 1 <= reply.usage.completion_tokens <= 4 and reply.usage.prompt_tokens > 3
    assert "MyModelForCausalLM" in server.log()  # the custom architecture built the model


def test_custom_architecture_matches_transformers(client: openai.OpenAI, tiny_custom_model: Path) -> None:
    """Greedy tokens equal HF LlamaForCausalLM's (logit_scale does not move the argmax)."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_custom_model)
    prompt_ids = tokenizer("The quick brown fox")["input_ids"]
    model = LlamaForCausalLM.from_pretrained(tiny_custom_model, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt_ids]), max_new_tokens=6, do_sample=False, min_new_tokens=6,
                                  pad_token_id=tokenizer.eos_token_id)[0, len(prompt_ids):].tolist()
    reply = client.completions.create(model=MODEL, prompt=prompt_ids, max_tokens=6, temperature=0, logprobs=0,
                                      extra_body={"ignore_eos": True})
    got = reply.choices[0].logprobs.tokens
    assert got == [tokenizer.decode([t]) for t in expected]


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(server: ServerProcess) -> None:
    """Runs last in this module: it stops the server."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 60, "temperature": 0,
            "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
    lines: list[str] = []
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as stream:
            assert stream.status_code == 200
            it = stream.iter_lines()
            while not any('"content": "' in ln and '"content": ""' not in ln for ln in lines):
                lines.append(next(it))
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.TransportError):  # the listener is closed: no new connections
                httpx.get(f"{server.base_url}/health", timeout=2)
            lines.extend(it)
    data = [ln for ln in lines if ln.startswith("data: ")]
    assert data[-1] == "data: [DONE]"
    assert '"finish_reason": "length"' in "".join(data)  # the request ran to its end during the drain
    assert '"completion_tokens": 60' in data[-2]
    assert server.proc.wait(DRAIN_TIMEOUT_S) == 0
