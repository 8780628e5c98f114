"""Shared incremental machinery. Each format is a `Scanner`: text in, `Text` / `Call` events out, the
same events (up to how `Text` is chunked) for every way of cutting the reply into pieces. `parse()` runs
the scanner over the whole reply; the streamer runs it over the deltas and turns events into OpenAI
`delta` dicts. Both paths strip the content the same way, so they agree by construction once the scanner
is cut-invariant.

A call is reported only once it is complete and validated (a block that turns out not to be a call is
content in both paths), so each call streams as its header delta and then one arguments fragment."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

from maxcli.serve.tool_parsers.base import ParsedReply, ToolCall, ToolCallStreamer, ToolParser, new_call_id


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Call:
    name: str
    arguments: str


Event = Union[Text, Call]


class Scanner(ABC):
    """One reply's incremental segmenter into content text and validated calls."""

    @abstractmethod
    def feed(self, text: str) -> list[Event]:
        """New text -> the events it settles; undecided text is held back."""

    @abstractmethod
    def end(self) -> list[Event]:
        """End of the reply: every held-back byte comes out as an event."""


class ScanningParser(ToolParser):
    """A ToolParser whose parse() and streamer() both run `scanner()`."""

    @abstractmethod
    def scanner(self) -> Scanner: ...

    def parse(self, text: str) -> ParsedReply:
        scanner = self.scanner()
        events = scanner.feed(text) + scanner.end()
        content = "".join(e.text for e in events if isinstance(e, Text)).strip()
        calls = [ToolCall(e.name, e.arguments) for e in events if isinstance(e, Call)]
        return ParsedReply(content if content or not calls else None, calls)

    def streamer(self) -> ToolCallStreamer:
        return EventStreamer(self.scanner())


class ContentSink:
    """Emits content so that the concatenation of everything emitted is the concatenation of everything
    fed, stripped: leading whitespace is dropped, trailing whitespace is held until more text follows."""

    def __init__(self) -> None:
        self._started = False
        self._held = ""

    def feed(self, text: str) -> str:
        if not self._started:
            text = text.lstrip()
            if not text:
                return ""
            self._started = True
        else:
            text = self._held + text
        body = text.rstrip()
        self._held = text[len(body):]
        return body


class EventStreamer(ToolCallStreamer):
    def __init__(self, scanner: Scanner) -> None:
        self._scanner = scanner
        self._sink = ContentSink()
        self._index = 0
        self._finished = False

    def push(self, delta: str) -> list[dict[str, Any]]:
        if self._finished:
            raise RuntimeError("push() after finish()")
        return self._deltas(self._scanner.feed(delta)) if delta else []

    def finish(self) -> list[dict[str, Any]]:
        if self._finished:
            return []
        self._finished = True
        return self._deltas(self._scanner.end())  # the sink's held trailing whitespace is dropped

    def _deltas(self, events: list[Event]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        text: list[str] = []
        for event in events:
            if isinstance(event, Text):
                text.append(self._sink.feed(event.text))
                continue
            if any(text):
                out.append({"content": "".join(text)})
            text = []
            index, self._index = self._index, self._index + 1
            out.append({"tool_calls": [{
                "index": index, "id": new_call_id(), "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }]})
            out.append({"tool_calls": [{"index": index, "function": {"arguments": event.arguments}}]})
        if any(text):
            out.append({"content": "".join(text)})
        return out


# --- text before a marker ------------------------------------------------------------------------------

def partial_marker_len(buf: str, marker: str) -> int:
    """Length of the longest suffix of `buf` that is a proper prefix of `marker`."""
    for k in range(min(len(marker) - 1, len(buf)), 0, -1):
        if buf.endswith(marker[:k]):
            return k
    return 0


class UntilMarker:
    """Plain text up to the next `marker`. Text that could be the start of the marker is held back until
    it cannot be (or the reply ends)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self._held = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """-> (settled text before the marker, the text after it, or None while no marker has arrived)."""
        buf, self._held = self._held + text, ""
        i = buf.find(self.marker)
        if i >= 0:
            return buf[:i], buf[i + len(self.marker):]
        k = partial_marker_len(buf, self.marker)
        self._held = buf[len(buf) - k:]
        return buf[:len(buf) - k], None

    def end(self) -> str:
        held, self._held = self._held, ""
        return held


# --- fixed heads, matched while they arrive -------------------------------------------------------------

MATCH, PARTIAL, FAIL = "match", "partial", "fail"


@dataclass(frozen=True)
class Lit:
    text: str
    optional: bool = False


@dataclass(frozen=True)
class Run:
    """A maximal run of characters accepted by `accepts`, at least `min_len` long."""

    accepts: Callable[[str], bool]
    min_len: int = 1


def is_ws(c: str) -> bool:
    return c.isspace()


WS = Run(is_ws, 0)


@dataclass(frozen=True)
class Opt:
    """An optional group, taken when its first element (a `Lit`) matches."""

    parts: tuple[Any, ...]


def match_head(buf: str, parts: Sequence[Any], start: int = 0) -> tuple[str, int]:
    """Greedy match of `parts` at buf[start:] -> (MATCH, end) | (PARTIAL, -1) | (FAIL, -1). PARTIAL: `buf`
    ends where more text could still complete a match. Each element's first characters must not be
    accepted by the `Run` before it, so greedy matching is exact."""
    i = start
    for part in parts:
        if isinstance(part, Lit):
            rest = buf[i:i + len(part.text)]
            if rest == part.text:
                i += len(part.text)
            elif len(rest) < len(part.text) and part.text.startswith(rest):  # buf ends inside the literal
                return PARTIAL, -1
            elif not part.optional:
                return FAIL, -1
        elif isinstance(part, Run):
            j = i
            while j < len(buf) and part.accepts(buf[j]):
                j += 1
            if j == len(buf):
                return PARTIAL, -1
            if j - i < part.min_len:
                return FAIL, -1
            i = j
        else:
            first = part.parts[0]
            state, _ = match_head(buf, (Lit(first.text),), i)
            if state == PARTIAL:
                return PARTIAL, -1
            if state == MATCH:
                state, i = match_head(buf, part.parts, i)
                if state != MATCH:
                    return state, -1
    return MATCH, i
