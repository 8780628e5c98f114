"""Mistral formats, after the `[TOOL_CALLS]` marker:
- older tokenizers: a JSON array of call objects, `[TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]`;
- v11+ tokenizers: `[TOOL_CALLS]f[ARGS]{...}` per call (optionally `[CALL_ID]id` before `[ARGS]`;
  `[ARGS]` itself is absent when special tokens were skipped in decoding).

What follows a marker is a call (or, for an array, calls) only when it is complete and valid: an array
of call objects, or a name and a JSON object. Otherwise the marker and that text are content. Text after
the calls is content, up to the next marker."""

from __future__ import annotations

from typing import Any, ClassVar

from maxcli.serve.tool_parsers import grammar as g
from maxcli.serve.tool_parsers.jsonscan import JsonEnd, array_elements, call_from_object, object_members
from maxcli.serve.tool_parsers.streaming import (
    FAIL, MATCH, PARTIAL, WS, Call, Event, Lit, Opt, Run, Scanner, ScanningParser, Text, UntilMarker,
    match_head,
)

MARKER, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"


def _name_char(c: str) -> bool:
    return c.isalnum() or c in "_-."


_ARRAY_HEAD = (WS, Lit("["), WS, Lit("{"), WS, Lit('"'))
_NAMED_HEAD = (WS, Run(_name_char), Opt((Lit(CALL_ID), Run(str.isalnum))), Lit(ARGS, optional=True), WS, Lit("{"))

_TEXT, _HEAD, _ARRAY, _ARGUMENTS = "text", "head", "array", "arguments"


class MistralScanner(Scanner):
    def __init__(self) -> None:
        self._state = _TEXT
        self._text = UntilMarker(MARKER)
        self._head = ""  # the marker and the text between it and the JSON being scanned
        self._buf = ""  # the JSON being scanned (or, in _HEAD, the text after the marker)
        self._name = ""
        self._end: JsonEnd | None = None

    def feed(self, text: str) -> list[Event]:
        events: list[Event] = []
        while True:
            if self._state == _TEXT:
                before, after = self._text.feed(text)
                if before:
                    events.append(Text(before))
                if after is None:
                    return events
                self._state, self._buf, text = _HEAD, "", after
                continue
            self._buf += text
            text = ""
            if self._state == _HEAD:
                if not self._match_head():
                    return events
                if self._state == _TEXT:  # not a call: the marker is content, the rest is text again
                    events.append(Text(MARKER))
                    text, self._buf = self._buf, ""
                continue
            assert self._end is not None
            end = self._end.scan(self._buf)
            if end is None:
                return events
            body, text = self._buf[:end], self._buf[end:]
            calls = self._calls(body)
            events.extend([Call(*c) for c in calls] if calls else [Text(self._head + body)])
            self._state, self._head, self._buf = _TEXT, "", ""

    def _match_head(self) -> bool:
        """Settles what follows the marker once that can be told: -> False while it cannot."""
        array, _ = match_head(self._buf, _ARRAY_HEAD)
        named, _ = match_head(self._buf, _NAMED_HEAD)
        if array == PARTIAL or named == PARTIAL:
            return False
        if array == FAIL and named == FAIL:
            self._state = _TEXT
            return True
        if array == MATCH:
            start, self._state = self._buf.index("["), _ARRAY
        else:
            start, self._state = self._buf.index("{"), _ARGUMENTS
            name = self._buf.lstrip()
            self._name = name[:next(i for i, c in enumerate(name) if not _name_char(c))]
        self._head, self._buf, self._end = MARKER + self._buf[:start], self._buf[start:], JsonEnd()
        return True

    def _calls(self, body: str) -> list[tuple[str, str]]:
        if self._state == _ARGUMENTS:
            return [(self._name, body)] if object_members(body) is not None else []
        calls = [call_from_object(element) for element in array_elements(body) or []]
        return calls if calls and all(calls) else []  # type: ignore[return-value]

    def end(self) -> list[Event]:
        if self._state == _TEXT:
            held = self._text.end()
        elif self._state == _HEAD:
            held = MARKER + self._buf
        else:
            held = self._head + self._buf
        self._state, self._head, self._buf = _TEXT, "", ""
        return [Text(held)] if held else []


class MistralParser(ScanningParser):
    name: ClassVar[str] = "mistral"

    def scanner(self) -> Scanner:
        return MistralScanner()

    def forced_grammar(self, tools: list[dict[str, Any]], parallel: bool, *, tokenizer: Any = None) -> str:
        """The array format; the v11 format where the tokenizer has `[ARGS]` as a special token."""
        functions = g.tool_functions(tools)
        marker = g.marker(MARKER, tokenizer)
        if g.special_token(ARGS, tokenizer) is not None:
            args = g.marker(ARGS, tokenizer)
            bodies = []
            for name, schema in functions:
                if not all(_name_char(c) for c in name):
                    raise ValueError(f"tool name {name!r} cannot be written in the [TOOL_CALLS]name[ARGS] format")
                bodies.append(f"{marker} {g.lark_string(name)} {args} {g.json_value(schema)}")
            return "\n".join(["start: call+" if parallel else "start: call", g.alternatives("call", bodies)]) + "\n"
        close = g.lark_string("}")
        bodies = []
        for name, schema in functions:
            head = g.lark_string('{"name": ' + g.json_text(name) + ', "arguments": ')
            bodies.append(f"{head} {g.json_value(schema)} {close}")
        start = f'start: {marker} "[" {g.repeated("call", ", ", parallel)} "]"'
        return "\n".join([start, g.alternatives("call", bodies)]) + "\n"
