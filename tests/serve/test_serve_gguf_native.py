"""`maxcli serve` on its default path for GGUF on a CPU (the file's quantized blocks, maxcli's C++ kernels),
talked to with the real openai client: chat and completions answer, and a streamed answer at temperature
0 equals the non-streamed one."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import openai
import pytest

from tests.serve.conftest import ServerProcess, start_server

MODEL = "smol-native"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Iterator[ServerProcess]:
    yield from start_server(tmp_path_factory, "gguf_native", ["--model", str(smollm2_gguf), "--served-model-name",
                                                              MODEL, "--max-length", "256"])


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)


def test_chat_and_stream_on_the_native_path(server: ServerProcess, client: openai.OpenAI) -> None:
    assert "GGUF blocks kept for" in server.log()
    # not the bare question, whose first reply token is a near-tie (tests/generation/test_golden_smollm2.py)
    chat = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    reply = client.chat.completions.create(model=MODEL, messages=chat, max_tokens=16, temperature=0)
    assert "Paris" in reply.choices[0].message.content
    stream = client.chat.completions.create(model=MODEL, messages=chat, max_tokens=16, temperature=0, stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == reply.choices[0].message.content
    done = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=6, temperature=0)
    assert done.choices[0].text.strip().startswith("5")
