"""The tool-call parser interface: what a parser returns for a whole reply, and the incremental streamer
that turns a reply's text deltas into OpenAI chat-completion-chunk `delta` dicts."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar


def new_call_id() -> str:
    """An OpenAI-style tool call id: "call_" + 24 hex chars."""
    return "call_" + uuid.uuid4().hex[:24]


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text of an object, e.g. '{"city": "Paris"}'
    id: str = field(default_factory=new_call_id)


@dataclass
class ParsedReply:
    # Text outside tool calls, stripped; None when that is empty and there are tool calls.
    content: str | None
    tool_calls: list[ToolCall]


class ToolCallStreamer(ABC):
    """Incremental parser for one reply. For every way of cutting a reply into deltas, the content deltas
    concatenate to `parse(reply).content or ""`, and per index the name and the concatenated argument
    fragments equal that call's in `parse(reply)`."""

    @abstractmethod
    def push(self, delta: str) -> list[dict[str, Any]]:
        """New text of the reply -> `delta` dicts ({"content": ...} or {"tool_calls": [...]})."""

    @abstractmethod
    def finish(self) -> list[dict[str, Any]]:
        """End of the reply: the deltas for whatever was held back."""


class ToolParser(ABC):
    name: ClassVar[str]

    @abstractmethod
    def parse(self, text: str) -> ParsedReply:
        """A whole model reply -> its content and tool calls."""

    @abstractmethod
    def streamer(self) -> ToolCallStreamer:
        """A fresh incremental parser for one reply."""

    @abstractmethod
    def forced_grammar(self, tools: list[dict[str, Any]], parallel: bool, *, tokenizer: Any = None) -> str:
        """An llguidance Lark grammar whose every accepted text is one tool call (one or more when
        `parallel`) in this parser's format, naming one of `tools` (OpenAI tool dicts) with arguments that
        match that tool's `parameters` schema; `parse()` of an accepted text returns exactly those calls.

        `tokenizer` (an `llguidance.LLTokenizer`; pass the one the matcher will use): format markers that it
        encodes as one special token (Qwen's `<tool_call>`, Mistral's `[TOOL_CALLS]`) are written as that
        token, which llguidance keeps apart from plain text. Without it the markers are plain text, which
        is right only for tokenizers that lack such tokens: where the marker is a special token, llguidance
        fast-forwards the plain marker into that token and then rejects it. Raises ValueError when `tools`
        is empty or a tool cannot be written in this format."""
