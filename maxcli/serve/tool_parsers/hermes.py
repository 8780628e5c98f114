"""Hermes / Qwen2.5 format: `<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>`, any number
of blocks, with text around them.

A block runs from `<tool_call>` to the next `</tool_call>` that is not inside a JSON string literal (so
arguments may hold the marker's text), or to the end of the reply for an unterminated last block (a
partial `</tool_call>` at its very end is ignored). A block whose body is one call object is a call; any
other block, markers included, is content. A block still open at the end of the reply that is not a
call but holds a `</tool_call>` (one its quotes hid) ends at the first of them after all, and the text
after that is scanned again."""

from __future__ import annotations

from typing import Any, ClassVar

from maxcli.serve.tool_parsers import grammar as g
from maxcli.serve.tool_parsers.jsonscan import JsonStrings, call_from_object
from maxcli.serve.tool_parsers.streaming import (
    Call, Event, Scanner, ScanningParser, Text, UntilMarker, partial_marker_len,
)

OPEN, CLOSE = "<tool_call>", "</tool_call>"


class HermesScanner(Scanner):
    def __init__(self) -> None:
        self._text = UntilMarker(OPEN)
        self._body: str | None = None  # inside a block: the text after its `<tool_call>`
        self._strings = JsonStrings()  # string literals of _body
        self._search = 0  # no block-ending `</tool_call>` starts before this index of _body

    def feed(self, text: str) -> list[Event]:
        events: list[Event] = []
        while True:
            if self._body is None:
                before, after = self._text.feed(text)
                if before:
                    events.append(Text(before))
                if after is None:
                    return events
                self._body, self._strings, self._search, text = "", JsonStrings(), 0, after
                continue
            self._body += text
            j = self._body.find(CLOSE, self._search)
            while j >= 0 and self._strings.inside(self._body, j):
                j = self._body.find(CLOSE, j + 1)
            if j < 0:
                self._search = max(self._search, len(self._body) - len(CLOSE) + 1)
                return events
            body, text = self._body[:j], self._body[j + len(CLOSE):]
            self._body = None
            events.append(_block(body))

    def end(self) -> list[Event]:
        if self._body is None:
            held = self._text.end()
            return [Text(held)] if held else []
        body, self._body = self._body, None
        call = call_from_object(body[:len(body) - partial_marker_len(body, CLOSE)])
        if call:
            return [Call(*call)]
        j = body.find(CLOSE)
        if j < 0:
            return [Text(OPEN + body)]
        rest = HermesScanner()
        return [_block(body[:j]), *rest.feed(body[j + len(CLOSE):]), *rest.end()]


def _block(body: str) -> Event:
    call = call_from_object(body)
    return Call(*call) if call else Text(OPEN + body + CLOSE)


class HermesParser(ScanningParser):
    name: ClassVar[str] = "hermes"

    def scanner(self) -> Scanner:
        return HermesScanner()

    def forced_grammar(self, tools: list[dict[str, Any]], parallel: bool, *, tokenizer: Any = None) -> str:
        open_, close = g.marker(OPEN, tokenizer), g.marker(CLOSE, tokenizer)
        tail = g.lark_string("}\n")
        bodies = []
        for name, schema in g.tool_functions(tools):
            head = g.lark_string('\n{"name": ' + g.json_text(name) + ', "arguments": ')
            bodies.append(f"{open_} {head} {g.json_value(schema)} {tail} {close}")
        return "\n".join([
            "start: " + g.repeated("call", "\n", parallel),
            g.alternatives("call", bodies),
        ]) + "\n"
