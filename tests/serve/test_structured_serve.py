"""Structured outputs and tool calls through the real server on Qwen2.5-Coder-0.5B-Instruct (its chat template
renders tools in the Hermes <tool_call> format), talked to with the real openai client."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.serve.conftest import ServerProcess, start_server

MODEL = "qwen-coder"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 130},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "address"],
    "additionalProperties": False,
}
SHOPPING = {
    "type": "object",
    "properties": {
        "items": {"type": "array", "minItems": 1, "maxItems": 4,
                  "items": {"type": "object", "properties": {"item": {"type": "string", "maxLength": 20},
                                                            "qty": {"type": "integer", "minimum": 1, "maximum": 9}},
                            "required": ["item", "qty"], "additionalProperties": False}},
        "store": {"enum": ["grocer", "market", "online"]},
    },
    "required": ["items", "store"],
    "additionalProperties": False,
}
# Numbers carry bounds, as strings carry maxLength: an unbounded one lets a sampled 0.5B model write digits
# until max_tokens (seen: a radius of 1 followed by zeros), a model failure the grammar cannot refuse.
SHAPE = {
    "$defs": {
        "circle": {"type": "object", "properties": {"kind": {"const": "circle"},
                                                    "radius": {"type": "number", "minimum": 0, "maximum": 1000}},
                   "required": ["kind", "radius"], "additionalProperties": False},
        "rect": {"type": "object", "properties": {"kind": {"const": "rect"}, "w": {"type": "integer", "minimum": 0, "maximum": 1000},
                                                  "h": {"type": "integer", "minimum": 0, "maximum": 1000}},
                 "required": ["kind", "w", "h"], "additionalProperties": False},
    },
    "type": "object",
    "properties": {"shape": {"anyOf": [{"$ref": "#/$defs/circle"}, {"$ref": "#/$defs/rect"}]},
                   "label": {"type": ["string", "null"], "maxLength": 20}},
    "required": ["shape", "label"],
    "additionalProperties": False,
}
SCHEMAS = {"person": PERSON, "shopping": SHOPPING, "shape": SHAPE}
PROMPTS = ["Give me an example as JSON.", "Make one up about a pirate.", "Return JSON for something small."]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                     "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"], "additionalProperties": False}}}
TOOLS = [WEATHER, ADD]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, qwen_gguf: Path) -> Iterator[ServerProcess]:
    yield from start_server(tmp_path_factory, "structured", ["--model", str(qwen_gguf), "--served-model-name", MODEL,
                                                             "--max-length", "2048", "--max-batch-size", "16"])


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=300)


def _chat(client: openai.OpenAI, content: str, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kwargs)


def test_json_schema_replies_validate(client: openai.OpenAI) -> None:
    jobs = [(name, prompt) for name in SCHEMAS for prompt in PROMPTS]

    def one(job: tuple[str, str]) -> tuple[str, Any]:
        name, prompt = job
        fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}
        return name, _chat(client, prompt, response_format=fmt, max_tokens=200, temperature=0.7, seed=3)

    with ThreadPoolExecutor(len(jobs)) as pool:  # one batch on the server
        replies = list(pool.map(one, jobs))
    for name, reply in replies:
        choice = reply.choices[0]
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), SCHEMAS[name])


class City(BaseModel):
    name: str
    country: str
    population_millions: float


class Trip(BaseModel):
    destination: City
    days: int
    activities: list[str] = Field(max_length=3)  # a 0.5B model may repeat list items until max_tokens
    budget_usd: Optional[int]


def test_parse_helper_with_a_pydantic_model(client: openai.OpenAI) -> None:
    done = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Plan a three-day trip to Rome."}],
        response_format=Trip, max_tokens=250, temperature=0,
    )
    trip = done.choices[0].message.parsed
    assert isinstance(trip, Trip) and isinstance(trip.destination, City)


def test_json_object_regex_choice_and_n(client: openai.OpenAI) -> None:
    obj = _chat(client, "Reply with a JSON object describing a cat.", response_format={"type": "json_object"},
                max_tokens=120, temperature=0)
    assert isinstance(json.loads(obj.choices[0].message.content), dict)
    rx = _chat(client, "Give a US phone number.", max_tokens=20, temperature=1.0,
               extra_body={"structured_outputs": {"regex": r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}"}})
    assert __import__("re").fullmatch(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}", rx.choices[0].message.content)
    two = _chat(client, "Is Python typed?", n=2, max_tokens=5, temperature=1.0, seed=1,
                extra_body={"guided_choice": ["yes", "no", "partly"]})
    assert len(two.choices) == 2 and all(c.message.content in ("yes", "no", "partly") for c in two.choices)
    comp = client.completions.create(model=MODEL, prompt="The answer is", max_tokens=5, temperature=0,
                                     extra_body={"structured_outputs": {"choice": ["42", "7"]}})
    assert comp.choices[0].text in ("42", "7")


def test_logprobs_under_a_constraint(client: openai.OpenAI) -> None:
    reply = _chat(client, "Pick one.", max_tokens=4, temperature=0, logprobs=True, top_logprobs=5,
                  extra_body={"structured_outputs": {"choice": ["apple", "banana"]}})
    content = reply.choices[0].message.content
    assert content in ("apple", "banana")
    first = reply.choices[0].logprobs.content[0]
    assert first.logprob > -1e9 and first.token == first.top_logprobs[0].token
    for alt in first.top_logprobs:  # alternatives are tokens the grammar allowed
        assert "apple".startswith(alt.token) or "banana".startswith(alt.token), alt


def test_logit_bias(client: openai.OpenAI, qwen_gguf: Path) -> None:
    from maxcli.pipelines.lib.tokenizer import TextTokenizer

    tok = TextTokenizer(qwen_gguf).delegate
    question = "What is the capital of France? Answer in one word."
    base = _chat(client, question, max_tokens=2, temperature=0).choices[0].message.content
    first = tok.encode(base, add_special_tokens=False)[0]
    banned = _chat(client, question, max_tokens=2, temperature=0, logit_bias={str(first): -100})
    assert tok.encode(banned.choices[0].message.content, add_special_tokens=False)[0] != first
    banana = tok.encode("banana", add_special_tokens=False)[0]
    forced = _chat(client, question, max_tokens=2, temperature=0, logit_bias={str(banana): 100})
    assert forced.choices[0].message.content.startswith(tok.decode([banana]))


def test_required_and_named_tool_choice_always_call(client: openai.OpenAI) -> None:
    prompts = ["Hello!", "Tell me a joke.", "What's 2 plus 3?", "Weather in Oslo in celsius please."]

    def one(job: tuple[str, Any]) -> Any:
        prompt, choice = job
        # one call per reply: with parallel calls allowed a 0.5B model may go on calling until max_tokens
        return _chat(client, prompt, tools=TOOLS, tool_choice=choice, max_tokens=120, temperature=0.8, seed=5,
                     parallel_tool_calls=False)

    named = {"type": "function", "function": {"name": "add"}}
    jobs = [(p, "required") for p in prompts] + [(p, named) for p in prompts]
    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(one, jobs))
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
    for (prompt, choice), reply in zip(jobs, replies):
        c = reply.choices[0]
        assert c.finish_reason == "tool_calls", (prompt, c)
        assert len(c.message.tool_calls) == 1 and not c.message.content, (prompt, c.message)
        for call in c.message.tool_calls:
            assert call.id.startswith("call_") and call.type == "function"
            if choice != "required":
                assert call.function.name == "add"
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])


def test_auto_calls_when_needed_and_answers_otherwise(client: openai.OpenAI) -> None:
    call = _chat(client, "What is the weather in Paris right now? Use celsius.", tools=TOOLS, max_tokens=100, temperature=0)
    c = call.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls[0].function.name == "get_weather"
    args = json.loads(c.message.tool_calls[0].function.arguments)
    assert "paris" in args["city"].lower()
    text = _chat(client, "Write a haiku about the sea.", tools=TOOLS, max_tokens=60, temperature=0)
    assert text.choices[0].finish_reason in ("stop", "length") and not text.choices[0].message.tool_calls
    assert text.choices[0].message.content


def test_two_turn_conversation_with_the_tool_result(client: openai.OpenAI) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant. After a tool result, answer the user in one sentence."},
        {"role": "user", "content": "What is 17 plus 25?"},
    ]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, tool_choice="required",
                                           max_tokens=80, temperature=0)
    call = first.choices[0].message.tool_calls[0]
    args = json.loads(call.function.arguments)
    messages.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": json.dumps({"result": args.get("a", 0) + args.get("b", 0)})})
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, max_tokens=60, temperature=0)
    answer = second.choices[0].message.content
    assert second.choices[0].finish_reason == "stop" and answer
    assert str(args.get("a", 0) + args.get("b", 0)) in answer


def _streamed(client: openai.OpenAI, **kwargs: Any) -> tuple[str, list[dict[str, str]], str | None]:
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(model=MODEL, stream=True, **kwargs):
        if not chunk.choices:
            continue
        ch = chunk.choices[0]
        finish = ch.finish_reason or finish
        content += ch.delta.content or ""
        for d in ch.delta.tool_calls or []:
            slot = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
            if d.id:
                assert slot["id"] in (None, d.id)
                slot["id"] = d.id
            if d.function and d.function.name:
                slot["name"] += d.function.name
            if d.function and d.function.arguments:
                slot["arguments"] += d.function.arguments
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("tool_choice", ["auto", "required"])
def test_streamed_tool_calls_equal_the_reply(client: openai.OpenAI, tool_choice: str) -> None:
    kwargs = dict(messages=[{"role": "user", "content": "Weather in Lima, in fahrenheit?"}], tools=TOOLS,
                  tool_choice=tool_choice, parallel_tool_calls=False, max_tokens=100, temperature=0)
    reply = client.chat.completions.create(model=MODEL, **kwargs)
    content, calls, finish = _streamed(client, **kwargs)
    message = reply.choices[0].message
    assert finish == reply.choices[0].finish_reason == "tool_calls"
    assert content == (message.content or "")
    assert [(c["name"], c["arguments"]) for c in calls] == [(t.function.name, t.function.arguments) for t in message.tool_calls]
    assert all(c["id"] and c["id"].startswith("call_") for c in calls)


def test_ignored_fields_are_accepted(client: openai.OpenAI) -> None:
    reply = _chat(client, "Hi", max_tokens=3, temperature=0, metadata={"k": "v"}, store=False, user="u1",
                  service_tier="auto", extra_body={"reasoning_effort": "low", "parallel_tool_calls": True})
    assert reply.choices[0].message.content is not None


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
         "not a valid JSON schema"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among the tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]}, "not a valid JSON schema"),
        ({"tool_choice": "required"}, "tool_choice needs"),
        ({"structured_outputs": {"regex": "a(b"}}, "invalid regex"),
        ({"structured_outputs": {"grammar": "start: nope"}}, "invalid grammar"),
        ({"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a"}}, "one output constraint"),
        ({"tools": [ADD], "tool_choice": "required", "response_format": {"type": "json_object"}}, "one output constraint"),
        ({"logit_bias": {"abc": 1}}, "logit_bias: key 'abc': must be a token id"),
        ({"logit_bias": {"5": 1000}}, "logit_bias.5: Input should be less than or equal to 100"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, "text parts only"),
        ({"messages": [{"role": "tool", "content": "3"}]}, "tool_call_id"),
        ({"modalities": ["audio"]}, "modalities"),
    ],
)
def test_bad_structured_input_is_a_400(server: ServerProcess, body: dict, needle: str) -> None:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **body}
    r = httpx.post(f"{server.base_url}/v1/chat/completions", json=payload, timeout=60)
    assert r.status_code == 400, r.text
    assert needle in r.json()["error"]["message"], r.json()


def test_a_grammar_that_never_ends_stops_by_length_and_frees_pages(server: ServerProcess, client: openai.OpenAI) -> None:
    reply = _chat(client, "Go", max_tokens=16, temperature=1.0, extra_body={"structured_outputs": {"grammar": 'start: "ab"+'}})
    assert reply.choices[0].finish_reason == "length"
    assert server.wait_metric("maxcli_kv_cache_used_pages", 0.0) == 0.0
    metrics = server.metric_text()
    assert 'maxcli_structured_output_requests_total{kind="grammar"}' in metrics
    assert "maxcli_structured_output_mask_seconds_per_token_count" in metrics
