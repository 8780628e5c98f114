"""Llama 3.1 / 3.2 JSON format: the reply is `{"name": "f", "parameters": {...}}` (or `"arguments"`),
optionally after `<|python_tag|>`, several separated by `;`.

Call positions: the start of the reply, right after a `<|python_tag|>`, and right after a call. At a call
position a JSON object starting `{"` is scanned to its end; when it is a call object it is a call (the
tag and whitespace before it are dropped, and so are whitespace and one `;` after it), otherwise it is
content. Anything else ends the call position and is content, up to the next `<|python_tag|>`."""

from __future__ import annotations

from typing import Any, ClassVar

from maxcli.serve.tool_parsers import grammar as g
from maxcli.serve.tool_parsers.jsonscan import JsonEnd, call_from_object
from maxcli.serve.tool_parsers.streaming import (
    FAIL, MATCH, PARTIAL, WS, Call, Event, Lit, Scanner, ScanningParser, Text, UntilMarker, match_head,
)

TAG = "<|python_tag|>"
_CALL_HEAD = (WS, Lit("{"), WS, Lit('"'))
_SEPARATOR = (WS, Lit(";", optional=True))

_TEXT, _POSITION, _OBJECT, _SEPARATE = "text", "position", "object", "separate"


class Llama3JsonScanner(Scanner):
    def __init__(self) -> None:
        self._state = _POSITION
        self._text = UntilMarker(TAG)
        self._lead = ""  # text a call drops: the tag that opened the position, whitespace before the object
        self._buf = ""  # text of the current position / object / separator, not yet settled
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
                self._state, self._lead, self._buf, text = _POSITION, TAG, "", after
                continue
            self._buf += text
            text = ""
            if self._state == _POSITION:
                state, _ = match_head(self._buf, _CALL_HEAD)
                if state == PARTIAL:
                    return events
                if state == FAIL:
                    if self._lead:
                        events.append(Text(self._lead))
                    self._state, text, self._buf = _TEXT, self._buf, ""
                    continue
                start = len(self._buf) - len(self._buf.lstrip())
                self._lead += self._buf[:start]
                self._state, self._buf, self._end = _OBJECT, self._buf[start:], JsonEnd()
            elif self._state == _OBJECT:
                assert self._end is not None
                end = self._end.scan(self._buf)
                if end is None:
                    return events
                obj, text = self._buf[:end], self._buf[end:]
                call = call_from_object(obj)
                if call:
                    events.append(Call(*call))
                    self._state = _SEPARATE
                else:
                    events.append(Text(self._lead + obj))
                    self._state = _TEXT
                self._lead, self._buf = "", ""
            else:
                state, end = match_head(self._buf, _SEPARATOR)
                if state != MATCH:
                    return events
                self._state, text, self._buf = _POSITION, self._buf[end:], ""

    def end(self) -> list[Event]:
        if self._state == _TEXT:
            held = self._text.end()
        else:
            held = self._lead + self._buf
        self._state, self._lead, self._buf = _TEXT, "", ""
        return [Text(held)] if held else []


class Llama3JsonParser(ScanningParser):
    name: ClassVar[str] = "llama3_json"

    def scanner(self) -> Scanner:
        return Llama3JsonScanner()

    def forced_grammar(self, tools: list[dict[str, Any]], parallel: bool, *, tokenizer: Any = None) -> str:
        close = g.lark_string("}")
        bodies = []
        for name, schema in g.tool_functions(tools):
            head = g.lark_string('{"name": ' + g.json_text(name) + ', "parameters": ')
            bodies.append(f"{head} {g.json_value(schema)} {close}")
        return "\n".join(["start: " + g.repeated("call", "; ", parallel), g.alternatives("call", bodies)]) + "\n"
