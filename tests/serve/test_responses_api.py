"""/v1/responses, /tokenize and /detokenize through the real server on Qwen2.5-Coder-0.5B-Instruct, with the
real openai client (responses.create, responses.stream, responses.parse, retrieve, delete)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.serve.conftest import ServerProcess, start_server

MODEL = "qwen-coder"
KEY = "responses-key"
WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, qwen_gguf: Path) -> Iterator[ServerProcess]:
    yield from start_server(tmp_path_factory, "responses",
                            ["--model", str(qwen_gguf), "--served-model-name", MODEL, "--max-length", "2048",
                             "--max-batch-size", "4", "--api-key", KEY, "--max-stored-responses", "8"], api_key=KEY)


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key=KEY, max_retries=0, timeout=120)


def _streamed(client: openai.OpenAI, **kwargs) -> tuple[list, object]:
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return events, final


def test_text_create_and_stream_agree(client: openai.OpenAI, server: ServerProcess) -> None:
    kwargs = dict(model=MODEL, input="Name three primary colours, comma separated.", temperature=0,
                  max_output_tokens=40, instructions="Answer briefly.")
    made = client.responses.create(**kwargs)
    assert made.status == "completed" and made.object == "response" and made.id.startswith("resp_")
    assert made.output_text.strip() and made.output[0].type == "message"
    assert made.usage.input_tokens > 10 and made.usage.output_tokens == made.usage.total_tokens - made.usage.input_tokens
    events, final = _streamed(client, **kwargs)
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert kinds.index("response.output_item.added") < kinds.index("response.content_part.added") \
        < kinds.index("response.output_text.delta") < kinds.index("response.output_text.done") \
        < kinds.index("response.output_item.done")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert final.output_text == deltas == made.output_text
    assert final.usage.output_tokens == made.usage.output_tokens
    assert server.wait_metric("maxcli_kv_cache_used_pages", 0.0) == 0.0


def test_token_limit_makes_an_incomplete_response(client: openai.OpenAI) -> None:
    made = client.responses.create(model=MODEL, input="Write a long story about the sea.", max_output_tokens=5,
                                   temperature=0)
    assert made.status == "incomplete" and made.incomplete_details.reason == "max_output_tokens"
    assert made.usage.output_tokens == 5
    with client.responses.stream(model=MODEL, input="Write a long story about the sea.", max_output_tokens=5,
                                 temperature=0) as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"


class City(BaseModel):
    name: str = Field(max_length=30)
    country: str = Field(max_length=30)
    population_millions: float


def test_json_schema_format(client: openai.OpenAI) -> None:
    schema = City.model_json_schema() | {"additionalProperties": False}
    made = client.responses.create(model=MODEL, input="Describe Paris as JSON.", temperature=0, max_output_tokens=80,
                                   text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}})
    city = City.model_validate_json(made.output_text)
    assert city.name
    parsed = client.responses.parse(model=MODEL, input="Describe Paris as JSON.", temperature=0, max_output_tokens=80,
                                    text_format=City)
    # Not compared with `made`: with prefix caching the second request prefills only its uncached tail, in
    # fewer rows, which the kernels multiply on their int8 path instead of the dense one; a near-tie in a
    # number may then go the other way.
    assert isinstance(parsed.output_parsed, City) and parsed.output_parsed.name
    assert parsed.output_parsed == City.model_validate_json(parsed.output_text)


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "What is the weather in Oslo? Use the tool."}]
    first = client.responses.create(model=MODEL, input=question, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
                                    temperature=0, max_output_tokens=60)
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert json.loads(calls[0].arguments)["city"].lower() == "oslo"
    events, streamed = _streamed(client, model=MODEL, input=question, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False,
                                 temperature=0, max_output_tokens=60)
    streamed_calls = [item for item in streamed.output if item.type == "function_call"]
    assert [(c.name, c.arguments) for c in streamed_calls] == [(calls[0].name, calls[0].arguments)]
    assert "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta") == calls[0].arguments
    result = {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temperature_c": -3, "sky": "snow"}'}
    # the client's own pattern: send the earlier output back as input items
    answer = client.responses.create(model=MODEL, input=question + [o.model_dump(exclude_none=True) for o in first.output]
                                     + [result], tools=[WEATHER], temperature=0, max_output_tokens=60)
    assert answer.status == "completed" and answer.output[0].type == "message"
    assert "-3" in answer.output_text or "snow" in answer.output_text.lower()
    # the same turn through the stored conversation
    chained = client.responses.create(model=MODEL, previous_response_id=first.id, input=[result], tools=[WEATHER],
                                      temperature=0, max_output_tokens=60)
    assert chained.output_text == answer.output_text
    assert chained.usage.input_tokens == answer.usage.input_tokens


def test_stored_responses(client: openai.OpenAI, server: ServerProcess) -> None:
    made = client.responses.create(model=MODEL, input="My favourite number is 47. Reply OK.", temperature=0,
                                   max_output_tokens=8)
    assert client.responses.retrieve(made.id).output_text == made.output_text
    follow = client.responses.create(model=MODEL, previous_response_id=made.id, input="What is my favourite number?",
                                     temperature=0, max_output_tokens=20)
    assert "47" in follow.output_text
    assert client.responses.delete(made.id) is None
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(made.id)
    with pytest.raises(openai.NotFoundError, match="no stored response"):
        client.responses.create(model=MODEL, previous_response_id=made.id, input="again", max_output_tokens=4)
    unstored = client.responses.create(model=MODEL, input="hi", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)
    for _ in range(10):  # the store is bounded (--max-stored-responses 8): the oldest go first
        client.responses.create(model=MODEL, input="hi", max_output_tokens=1)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(follow.id)


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"input": "hi", "tool_choice": "required"}, 400, "tool_choice needs"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, 400, "needs `name` and `schema`"),
        ({"input": [{"type": "function_call_output", "output": "3"}]}, 400, "call_id"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400, "input.0"),
        ({"input": "hi", "reasoning": {"effort": "high"}}, 400, "unknown or unsupported field 'reasoning'"),
        ({"input": "hi", "model": "other"}, 404, "does not exist"),
    ],
)
def test_bad_responses_requests(server: ServerProcess, body: dict, status: int, needle: str) -> None:
    r = httpx.post(f"{server.base_url}/v1/responses", json={"model": MODEL, **body}, headers=server.headers(), timeout=60)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and needle in r.json()["error"]["message"], r.json()


def test_tokenize_and_detokenize(client: openai.OpenAI, server: ServerProcess) -> None:
    def post(route: str, body: dict, headers: dict | None = None) -> httpx.Response:
        return httpx.post(f"{server.base_url}{route}", json=body, timeout=60,
                          headers=server.headers() if headers is None else headers)

    text = "def add(a, b):\n    return a + b  # ünïcode ✓"
    tok = post("/tokenize", {"model": MODEL, "prompt": text, "return_token_strs": True}).json()
    assert tok["count"] == len(tok["tokens"]) == len(tok["token_strs"]) and tok["max_model_len"] == 2048
    assert post("/detokenize", {"model": MODEL, "tokens": tok["tokens"]}).json() == {"prompt": text}
    # messages go through the chat template exactly as a chat request's prompt does
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    chat_tok = post("/tokenize", {"messages": messages}).json()
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    assert chat_tok["count"] == reply.usage.prompt_tokens and chat_tok["token_strs"] is None
    for route, body in (("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [1]})):
        assert post(route, body, headers={}).status_code == 401
    bad = post("/tokenize", {"prompt": "x", "messages": messages})
    assert bad.status_code == 400 and "unknown or unsupported field 'prompt'" in bad.json()["error"]["message"]
    bad = post("/detokenize", {"tokens": [10**9]})
    assert bad.status_code == 400 and "not a token id" in bad.json()["error"]["message"]
