"""Tool-call parsers: parse() of whole replies, the streamer agreeing with parse() for every cut of a
reply into deltas, the OpenAI delta shapes, parser_for, and each format's forced grammar run for real
through llguidance with the Qwen2.5-Coder tokenizer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import llguidance
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from maxcli.serve.tool_parsers import PARSER_NAMES, ToolParser, parser_for

WEATHER = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def calls_of(parser: ToolParser, text: str) -> tuple[str | None, list[tuple[str, str]]]:
    reply = parser.parse(text)
    return reply.content, [(c.name, c.arguments) for c in reply.tool_calls]


PARSE_CASES = {
    "hermes": [
        ("  just text  ", "just text", []),
        ("Let me check.\n<tool_call>\n" + WEATHER + "\n</tool_call>\n<tool_call>\n"
         '{"name": "ping", "arguments": {}}\n</tool_call>', "Let me check.",
         [("get_weather", '{"city": "Paris"}'), ("ping", "{}")]),
        ('<tool_call>{"name": "f", "arguments": {"a" :1 ,"b": [ 2 ]}}</tool_call>', None,
         [("f", '{"a" :1 ,"b": [ 2 ]}')]),
        ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>', None, [("f", '{"a": 1}')]),
        ('<tool_call>{"arguments": {"a": 1}, "name": "f"}</tool_call>', None, [("f", '{"a": 1}')]),
        ('<tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>', None, [("f", '{"a": 1}')]),
        ('<tool_call>{"name": "f"}</tool_call>', None, [("f", "{}")]),
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n', None, [("f", '{"a": 1}')]),
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_ca', None, [("f", '{"a": 1}')]),
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1', '<tool_call>\n{"name": "f", "arguments": {"a": 1', []),
        *((text, text, []) for text in ['A <tool_call>{"name": "f", "arguments": [1]}</tool_call> B',
                                        '<tool_call>{"name": "f", "arguments": "[1]"}</tool_call>']),
        ("x <tool_call>nope</tool_call>\n<tool_call>" + WEATHER + "</tool_call> y",
         "x <tool_call>nope</tool_call>\n y", [("get_weather", '{"city": "Paris"}')]),
        ('<tool_call>{"name": "f", "arguments": {"s": "</tool_call>"}}</tool_call>', None,
         [("f", '{"s": "</tool_call>"}')]),
        ('<tool_call>{"name": "f", "arguments": {"s": "x}}</tool_call> z <tool_call>' + WEATHER + "</tool_call>",
         '<tool_call>{"name": "f", "arguments": {"s": "x}}</tool_call> z', [("get_weather", '{"city": "Paris"}')]),
    ],
    "llama3_json": [
        ('{"name": "f", "parameters": {"a": 1}}', None, [("f", '{"a": 1}')]),
        ('<|python_tag|>{"name": "f", "arguments": {"s": "x;y"}}; {"name": "g", "parameters": {}};', None,
         [("f", '{"s": "x;y"}'), ("g", "{}")]),
        ('Sure. <|python_tag|>{"name": "f", "parameters": {}}', "Sure.", [("f", "{}")]),
        ('Here: {"name": "f", "parameters": {}}', 'Here: {"name": "f", "parameters": {}}', []),
        ('{"answer": 42} done', '{"answer": 42} done', []),
        ('{"name": "f", "parameters": 3}', '{"name": "f", "parameters": 3}', []),
        ('{"name": "f", "parameters": {}} and more', "and more", [("f", "{}")]),
        ("{not json", "{not json", []),
    ],
    "mistral": [
        ('[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]', None,
         [("f", '{"a": 1}'), ("g", "{}")]),
        ('Hello[TOOL_CALLS] [{"arguments": {"a": 1}, "name": "f"}]\ntrailing', "Hello\ntrailing", [("f", '{"a": 1}')]),
        ('[TOOL_CALLS]f[ARGS]{"a": 1}[TOOL_CALLS]g[CALL_ID]a1B2c3D4e[ARGS]{}', None, [("f", '{"a": 1}'), ("g", "{}")]),
        ('[TOOL_CALLS]add{"a": 3.5, "b": 4}', None, [("add", '{"a": 3.5, "b": 4}')]),
        ("[TOOL_CALLS] not json at all", "[TOOL_CALLS] not json at all", []),
        ('[TOOL_CALLS][{"name": "f", "arguments": 1}]', '[TOOL_CALLS][{"name": "f", "arguments": 1}]', []),
        ('[TOOL_CALLS]f[ARGS]{"a": 1', '[TOOL_CALLS]f[ARGS]{"a": 1', []),
    ],
    "pythonic": [
        ('[get_weather(city="Paris", days=3), ping()]', None,
         [("get_weather", '{"city": "Paris", "days": 3}'), ("ping", "{}")]),
        ("[f(a=true, b=null, c=False, d=[1, -2.5, 'x'], e={'k': (1, 2)})]", None,
         [("f", '{"a": true, "b": null, "c": false, "d": [1, -2.5, "x"], "e": {"k": [1, 2]}}')]),
        ('[f(s="a\\/b\\ud83d\\ude00", t=\'it\\\'s\', u="""x]""")]', None,
         [("f", '{"s": "a/b😀", "t": "it\'s", "u": "x]"}')]),
        ("<|python_start|>[f(a=1)]<|python_end|>", None, [("f", '{"a": 1}')]),
        ("[f(x=-1E400, y=1e3)]", None, [("f", '{"x": -1E400, "y": 1000.0}')]),
        ("[f(a=1)] then text", "then text", [("f", '{"a": 1}')]),
        ("[f(1)]", "[f(1)]", []),
        ("[f(a=x)]", "[f(a=x)]", []),
        ("[f(a=1), 2]", "[f(a=1), 2]", []),
        ("[1, 2, 3] is a list", "[1, 2, 3] is a list", []),
        ("Sure: [f(a=1)]", "Sure: [f(a=1)]", []),
    ],
}


@pytest.mark.parametrize("name, text, content, calls",
                         [(n, *case) for n, cases in PARSE_CASES.items() for case in cases])
def test_parse(name: str, text: str, content: str | None, calls: list[tuple[str, str]]) -> None:
    assert calls_of(parser_for(name, None), text) == (content, calls)


# --- streaming ------------------------------------------------------------------------------------------

def stream(parser: ToolParser, text: str, cuts: list[int]) -> list[dict[str, Any]]:
    streamer, deltas, prev = parser.streamer(), [], 0
    for cut in sorted(set(cuts)) + [len(text)]:
        deltas += streamer.push(text[prev:cut])
        prev = cut
    return deltas + streamer.finish()


def collect(deltas: list[dict[str, Any]]) -> tuple[str, list[tuple[str, str]]]:
    """Streamed deltas -> (content, [(name, arguments)]), checking OpenAI's delta shapes on the way."""
    content, calls, ids = "", {}, {}
    for delta in deltas:
        assert list(delta) in (["content"], ["tool_calls"])
        if "content" in delta:
            assert isinstance(delta["content"], str) and delta["content"]
            content += delta["content"]
            continue
        (call,) = delta["tool_calls"]
        index = call["index"]
        if "id" in call:
            assert index not in ids and index == len(ids)
            assert re.fullmatch(r"call_[0-9a-f]{24}", call["id"]) and call["type"] == "function"
            assert call["function"]["arguments"] == "" and set(call["function"]) == {"name", "arguments"}
            ids[index], calls[index] = call["id"], [call["function"]["name"], ""]
        else:
            assert set(call) == {"index", "function"} and set(call["function"]) == {"arguments"}
            calls[index][1] += call["function"]["arguments"]
    return content, [tuple(calls[i]) for i in sorted(calls)]  # type: ignore[misc]


PIECES = {
    "hermes": ["<tool_call>\n" + WEATHER + "\n</tool_call>",
               '<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>',
               '<tool_call>{"name": "g", "arguments": {"s": "</tool_call>"}}</tool_call>',
               "<tool_call>", "</tool_call>",
               '{"name": "h", "arguments": {}}', "<tool_c", "<", "Hello", " ", "\n", "é😀",
               '{"name": "f", "arguments": [1]}'],
    "llama3_json": ['{"name": "f", "parameters": {"a": 1}}', '{"name": "g", "arguments": {"s": "x;y}"}}',
                    ";", " ", "\n", "<|python_tag|>", "<|python", "Hello", '{"x": 1}', "{", "}", '"',
                    '{"name": "f", "parameters": 3}', "é😀"],
    "mistral": ['[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}]', '[TOOL_CALLS]f[ARGS]{"a": 1}', "[TOOL_CALLS]",
                '[{"name": "f", "arguments": {"a": 1}}]', '[{"name": "g", "arguments": {}}, {"name": "h"}]',
                'f[ARGS]{"a": "]"}', "g", "[ARGS]", "[CALL_ID]a1b2", '{"b": [1, 2]}', "[", "]", " ", "text",
                "[TOOL_", "é😀"],
    "pythonic": ['[get_weather(city="Paris")]', '[f(a=true), g(s="x]")]', "[", "]", "f(a=1)", ", ", "h(t='it''s')", " ",
                 "<|python_start|>", "<|python_end|>", "text", '"""', "'", "(", ")", "é😀"],
}


@pytest.mark.parametrize("name", sorted(PIECES))
@settings(max_examples=120, deadline=None, database=None)
@given(data=st.data())
def test_stream_matches_parse_for_every_cut(name: str, data: st.DataObject) -> None:
    parser = parser_for(name, None)
    text = "".join(data.draw(st.lists(st.sampled_from(PIECES[name]), max_size=8), label="pieces"))
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10), label="cuts")
    reply = parser.parse(text)
    expected = (reply.content or "", [(c.name, c.arguments) for c in reply.tool_calls])
    assert collect(stream(parser, text, cuts)) == expected
    assert collect(stream(parser, text, list(range(len(text))))) == expected


@pytest.mark.parametrize("name, text", [(n, case[0]) for n, cases in PARSE_CASES.items() for case in cases])
def test_stream_one_character_at_a_time(name: str, text: str) -> None:
    parser = parser_for(name, None)
    content, calls = calls_of(parser, text)
    assert collect(stream(parser, text, list(range(len(text))))) == (content or "", calls)


def test_stream_deltas_and_held_back_marker() -> None:
    streamer = parser_for("hermes", None).streamer()
    assert streamer.push("Hello <tool_c") == [{"content": "Hello"}]  # the space and "<tool_c" are held
    assert streamer.push('all>\n{"name": "f", ') == []
    deltas = streamer.push('"arguments": {"a": 1}}\n</tool_call> <tool_x')
    call_id = deltas[0]["tool_calls"][0]["id"]
    assert deltas == [
        {"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]},
        {"content": "  <tool_x"},  # the space held before the call, then the text after it
    ]
    assert streamer.push(" ") == [] and streamer.finish() == []


# --- parser_for -----------------------------------------------------------------------------------------

def test_parser_for_names_and_unknown() -> None:
    for name in PARSER_NAMES[1:]:
        assert parser_for(name, None).name == name
    with pytest.raises(ValueError) as err:
        parser_for("qwen", None)
    assert "\n" not in str(err.value) and all(n in str(err.value) for n in PARSER_NAMES)


@pytest.mark.parametrize("template, expected", [
    (None, "hermes"), ("{{ messages }}", "hermes"), ("{{- '[TOOL_CALLS]' + tool_calls|tojson }}", "mistral"),
    ("{{- '<|python_tag|>' + tool_call.name }}", "llama3_json"),
    ('Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.',
     "llama3_json"),
    ("<|python_tag|> ... [func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]",
     "pythonic"),
])
def test_auto_detection(template: str | None, expected: str) -> None:
    assert parser_for("auto", template).name == expected


# --- forced grammars ------------------------------------------------------------------------------------

WEATHER_SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "description": "a city {braces} \"quoted\""},
    "unit": {"enum": ["c", "f"]}, "days": {"type": "integer", "minimum": 1}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
         {"type": "function", "function": {"name": "ping", "description": "no parameters"}}]
CALL_A, CALL_B = ("get_weather", {"city": "Paris", "days": 2}), ("ping", {})
# Argument text that holds each format's markers and closing brackets.
CALL_C = ("get_weather", {"city": 'x"]}) </tool_call> [TOOL_CALLS] <|python_tag|> \\ é', "unit": "f"})


def render(name: str, calls: list[tuple[str, dict[str, Any]]]) -> str:
    """Canonical text of `calls` in format `name`."""
    if name == "pythonic":
        keywords = [", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in a.items()) for _, a in calls]
        return "[" + ", ".join(f"{f}({kw})" for (f, _), kw in zip(calls, keywords)) + "]"
    key = "parameters" if name == "llama3_json" else "arguments"
    objs = ['{"name": ' + json.dumps(f) + f', "{key}": ' + json.dumps(a, ensure_ascii=False) + "}" for f, a in calls]
    if name == "hermes":
        return "\n".join(f"<tool_call>\n{o}\n</tool_call>" for o in objs)
    return "; ".join(objs) if name == "llama3_json" else "[TOOL_CALLS][" + ", ".join(objs) + "]"


@pytest.fixture(scope="module")
def qwen(qwen_gguf: Path) -> tuple[Any, Any]:
    from maxcli.pipelines.lib.tokenizer import TextTokenizer

    t = TextTokenizer(qwen_gguf)
    return t, llguidance.LLTokenizer(t.delegate._tokenizer.to_str(), eos_token=sorted(t.eos_token_ids))


def test_auto_detects_hermes_from_the_qwen_template(qwen: tuple[Any, Any]) -> None:
    assert parser_for("auto", qwen[0].delegate.chat_template).name == "hermes"


def accepts(tok: Any, grammar: str, tokens: list[int]) -> bool:
    matcher = llguidance.LLMatcher(tok, grammar, log_level=0)
    assert not matcher.is_error(), matcher.get_error()
    return matcher.consume_tokens(tokens) and matcher.is_accepting()


FORMATS = ["hermes", "llama3_json", "mistral", "pythonic"]


@pytest.mark.parametrize("name", FORMATS)
@pytest.mark.parametrize("parallel", [False, True])
def test_forced_grammar_accepts_calls_and_rejects_the_rest(qwen: tuple[Any, Any], name: str, parallel: bool) -> None:
    _, tok = qwen
    parser = parser_for(name, None)

    def plain(text: str) -> list[int]:  # no special tokens: every "<" on its own
        return [i for piece in re.split("(<)", text) if piece for i in tok.tokenize_str(piece)]

    # Markers as special tokens (text tokenized as the model would write it), then as plain text.
    for grammar_tok, tokenize, extra in ((tok, tok.tokenize_str, []), (None, plain, [[CALL_C], [CALL_C, CALL_B]])):
        grammar = parser.forced_grammar(TOOLS, parallel, tokenizer=grammar_tok)
        for calls in [[CALL_A], [CALL_B], [CALL_B, CALL_A], *extra]:
            text = render(name, calls)
            assert accepts(tok, grammar, tokenize(text)) == (parallel or len(calls) == 1), text
            _, got = calls_of(parser, text)
            assert [(f, json.loads(a)) for f, a in got] == calls
        bad = [[("get_wether", {"city": "Paris"})], [("get_weather", {"days": 2})], [("get_weather", {"city": 5})],
               [("get_weather", {"city": "Paris", "days": 0})], [("get_weather", {"city": "Paris", "unit": "k"})],
               [CALL_B, ("get_weather", {"city": 5})]]
        if name == "pythonic":  # keywords in the schema's order
            bad.append([("get_weather", {"days": 2, "city": "Paris"})])
        for calls in bad:
            assert not accepts(tok, grammar, tokenize(render(name, calls))), calls
        assert not accepts(tok, grammar, tokenize("Sure. " + render(name, [CALL_A])))


def test_hermes_markers_are_special_tokens_only_with_a_tokenizer(qwen: tuple[Any, Any]) -> None:
    _, tok = qwen
    parser = parser_for("hermes", None)
    text = render("hermes", [CALL_B])
    assert "<[" in parser.forced_grammar(TOOLS, False, tokenizer=tok)
    plain = parser.forced_grammar(TOOLS, False)
    assert "<[" not in plain
    spelled = [i for piece in re.split(r"(<|/tool_call>|tool_call>)", text) if piece for i in tok.tokenize_str(piece)]
    assert accepts(tok, plain, spelled) and not accepts(tok, plain, tok.tokenize_str(text))


def test_mistral_v11_grammar_with_special_markers(qwen: tuple[Any, Any]) -> None:
    from tokenizers import Tokenizer

    t, _ = qwen
    raw = Tokenizer.from_str(t.delegate._tokenizer.to_str())
    raw.add_special_tokens(["[TOOL_CALLS]", "[ARGS]"])
    tok = llguidance.LLTokenizer(raw.to_str(), eos_token=sorted(t.eos_token_ids))
    parser = parser_for("mistral", None)
    grammar = parser.forced_grammar(TOOLS, True, tokenizer=tok)
    assert grammar.count("<[") >= 4
    text = '[TOOL_CALLS]ping[ARGS]{}[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "days": 2}'
    assert accepts(tok, grammar, tok.tokenize_str(text, parse_special=True))
    assert not accepts(tok, grammar, tok.tokenize_str("[TOOL_CALLS]pong[ARGS]{}", parse_special=True))
    assert [(f, json.loads(a)) for f, a in calls_of(parser, text)[1]] == [CALL_B, CALL_A]


def test_pythonic_grammar_with_shared_definitions(qwen: tuple[Any, Any]) -> None:
    _, tok = qwen
    schema = {"type": "object", "$defs": {"unit": {"enum": ["c", "f"]}},
              "properties": {"unit": {"$ref": "#/$defs/unit"}, "n": {"type": "integer"}}, "required": ["n"]}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    grammar = parser_for("pythonic", None).forced_grammar(tools, False)
    assert accepts(tok, grammar, tok.tokenize_str('[f(unit="c", n=1)]'))
    assert accepts(tok, grammar, tok.tokenize_str("[f(n=1)]"))
    assert not accepts(tok, grammar, tok.tokenize_str('[f(unit="k", n=1)]'))
    assert not accepts(tok, grammar, tok.tokenize_str('[f(unit="c")]'))


def test_forced_grammar_refusals() -> None:
    for name in FORMATS:
        with pytest.raises(ValueError):
            parser_for(name, None).forced_grammar([], False)
    odd = [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"from": {"type": "string"}}, "required": ["from"]}}}]
    with pytest.raises(ValueError, match="from"):
        parser_for("pythonic", None).forced_grammar(odd, False)


def sample(tok: Any, grammar: str, rng: np.random.Generator, closers: np.ndarray) -> list[int]:
    """A random text of `grammar`: uniform over the allowed tokens, leaning on closing tokens after a while."""
    matcher, out = llguidance.LLMatcher(tok, grammar, log_level=0), []
    for step in range(400):
        allowed = np.flatnonzero(np.frombuffer(matcher.compute_logit_bias(), dtype=np.uint8))
        if matcher.is_accepting() and (step > 10 or len(allowed) == 1):
            return out
        closing = np.intersect1d(allowed, closers)
        pool = closing if step > 12 and len(closing) and rng.random() < 0.8 else allowed
        token = int(rng.choice(pool))
        assert matcher.consume_token(token), matcher.get_error()
        out.append(token)
    raise AssertionError("no accepting state in 400 tokens")


@pytest.fixture(scope="module")
def closers(qwen: tuple[Any, Any]) -> np.ndarray:
    """Tokens that only close things (quotes, brackets), and the special tokens."""
    t, tok = qwen
    vocab = t.delegate._tokenizer.get_vocab()
    return np.array(sorted(i for s, i in vocab.items() if i < tok.vocab_size and (
        set(t.delegate._tokenizer.decode([i])) <= set('"}])') if set(s) <= set('"}])') else tok.is_special_token(i))))


@pytest.mark.parametrize("name", FORMATS)
def test_sampled_grammar_texts_parse_to_valid_calls(qwen: tuple[Any, Any], closers: np.ndarray, name: str) -> None:
    t, tok = qwen
    parser, schemas = parser_for(name, None), {"get_weather": WEATHER_SCHEMA, "ping": {"type": "object"}}
    grammar = parser.forced_grammar(TOOLS, True, tokenizer=tok)
    rng = np.random.default_rng(7)
    for _ in range(6):
        tokens = [i for i in sample(tok, grammar, rng, closers) if i not in tok.eos_tokens]
        text = t.delegate._tokenizer.decode(tokens, skip_special_tokens=False)
        content, calls = calls_of(parser, text)
        assert content is None and calls, text
        for fname, arguments in calls:
            jsonschema.validate(json.loads(arguments), schemas[fname])
