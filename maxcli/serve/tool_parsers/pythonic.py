"""Pythonic format (Llama 3.2 / 4 pythonic, many small models): the reply is a Python list of keyword
calls, `[f(a=1, b="x"), g()]`, optionally between Llama 4's `<|python_start|>` and `<|python_end|>`.

Only a reply that starts (after whitespace and the optional start tag) with `[name(` can hold calls; the
list is scanned to its closing bracket and is calls only when every element is a keyword call with
literal values (all or nothing). Everything else, and text after the list, is content."""

from __future__ import annotations

import keyword
from typing import Any, ClassVar

from maxcli.serve.tool_parsers import grammar as g
from maxcli.serve.tool_parsers.pycalls import PyEnd, parse_call_list
from maxcli.serve.tool_parsers.streaming import (
    FAIL, MATCH, PARTIAL, WS, Call, Event, Lit, Run, Scanner, ScanningParser, Text, match_head,
)

START_TAG, END_TAG = "<|python_start|>", "<|python_end|>"


def _name_char(c: str) -> bool:
    return c.isalnum() or c in "_."


_HEAD = (WS, Lit(START_TAG, optional=True), WS, Lit("["), WS, Run(_name_char), WS, Lit("("))
_TAIL = (WS, Lit(END_TAG))

_HEAD_STATE, _LIST, _TAIL_STATE, _TEXT = "head", "list", "tail", "text"

# Top-level keywords of a parameters schema that constrain more than each property on its own: the
# pythonic grammar, built property by property, cannot honour them.
_UNSUPPORTED = {
    "anyOf", "oneOf", "allOf", "not", "if", "then", "else", "minProperties", "maxProperties",
    "dependentRequired", "dependentSchemas", "dependencies", "patternProperties", "propertyNames",
    "unevaluatedProperties", "$ref",
}


class PythonicScanner(Scanner):
    def __init__(self) -> None:
        self._state = _HEAD_STATE
        self._lead = ""  # whitespace and start tag before the list
        self._buf = ""
        self._end = PyEnd()

    def feed(self, text: str) -> list[Event]:
        events: list[Event] = []
        while True:
            if self._state == _TEXT:
                if text:
                    events.append(Text(text))
                return events
            self._buf += text
            text = ""
            if self._state == _HEAD_STATE:
                state, _ = match_head(self._buf, _HEAD)
                if state == PARTIAL:
                    return events
                if state == FAIL:
                    self._state, text, self._buf = _TEXT, self._buf, ""
                    continue
                start = self._buf.index("[")
                self._lead, self._buf, self._state = self._buf[:start], self._buf[start:], _LIST
            elif self._state == _LIST:
                end = self._end.scan(self._buf)
                if end is None:
                    return events
                body, text = self._buf[:end], self._buf[end:]
                calls = parse_call_list(body)
                if calls:
                    events.extend(Call(*c) for c in calls)
                    self._state = _TAIL_STATE
                else:
                    events.append(Text(self._lead + body))
                    self._state = _TEXT
                self._lead, self._buf = "", ""
            else:
                state, end = match_head(self._buf, _TAIL)
                if state == PARTIAL:
                    return events
                text = self._buf[end:] if state == MATCH else self._buf  # the end tag is dropped
                self._state, self._buf = _TEXT, ""

    def end(self) -> list[Event]:
        held = self._lead + self._buf
        self._state, self._lead, self._buf = _TEXT, "", ""
        return [Text(held)] if held else []


def _is_identifier(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name)


def _keyword_items(name: str, schema: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """(keyword, value schema, required) in the schema's `properties` order, then required keys that have
    no property schema (any JSON value). Optional keys that are not Python identifiers are left out."""
    bad = _UNSUPPORTED & schema.keys()
    if bad:
        raise ValueError(f"tool {name!r}: {sorted(bad)} in parameters cannot be forced as pythonic calls")
    properties = schema.get("properties") or {}
    required = set(schema.get("required") or [])
    defs = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    items = []
    for key in list(properties) + [k for k in schema.get("required") or [] if k not in properties]:
        if not _is_identifier(key):
            if key in required:
                raise ValueError(f"tool {name!r}: required parameter {key!r} is not a Python keyword name")
            continue
        value = properties.get(key, {})
        value = {**defs, **value} if isinstance(value, dict) else value
        items.append((key, value, key in required))
    return items


class PythonicParser(ScanningParser):
    name: ClassVar[str] = "pythonic"

    def scanner(self) -> Scanner:
        return PythonicScanner()

    def forced_grammar(self, tools: list[dict[str, Any]], parallel: bool, *, tokenizer: Any = None) -> str:
        """Keyword-only calls, keys in `properties` order, required ones mandatory, each value a JSON
        literal of its property's schema (which parse() reads as the same value)."""
        calls, rules = [], []
        for k, (name, schema) in enumerate(g.tool_functions(tools)):
            if not all(_is_identifier(part) for part in name.split(".")):
                raise ValueError(f"tool name {name!r} cannot be written as a Python call")
            call, call_rules = _call_rules(f"{k}_", name, _keyword_items(name, schema))
            calls.append(call)
            rules += call_rules
        return "\n".join([
            'start: "[" ' + g.repeated("call", ", ", parallel) + ' "]"',
            g.alternatives("call", calls),
            *rules,
        ]) + "\n"


def _call_rules(tag: str, name: str, items: list[tuple[str, Any, bool]]) -> tuple[str, list[str]]:
    """The body of one tool's call rule, and the rules it uses (their names carry `tag`):
    kv{i}: `key=value` of keyword i; rest{i} (i >= 1): keywords i.. each after ", ", once one came before;
    args: the first keyword written (any optional one up to the first required one) and the rest."""
    n, rules = len(items), []

    def rest(i: int) -> str:
        return f" rest{tag}{i}" if i < n else ""

    for i, (key, value, required) in enumerate(items):
        rules.append(f"kv{tag}{i}: {g.lark_string(key + '=')} {g.json_value(value)}")
        if i:
            item = f'{g.lark_string(", ")} kv{tag}{i}'
            rules.append(f"rest{tag}{i}: " + (item if required else f"({item})?") + rest(i + 1))
    first_required = next((i for i, item in enumerate(items) if item[2]), n)
    firsts = [f"kv{tag}{i}{rest(i + 1)}" for i in range(min(first_required + 1, n))]
    args = ""
    if firsts:
        rules.append(g.alternatives(f"args{tag}", firsts))
        args = f" args{tag}" if first_required < n else f" args{tag}?"
    return f"{g.lark_string(name + '(')}{args} {g.lark_string(')')}", rules
