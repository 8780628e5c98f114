"""Tool-call parsers: a model reply's text -> content and OpenAI tool calls, whole or streamed, and the
llguidance grammar that forces a reply to be tool calls, for the hermes, llama3_json, mistral and
pythonic formats. `parser_for(name, chat_template)` picks one ("auto" reads the chat template)."""

from __future__ import annotations

from maxcli.serve.tool_parsers.base import ParsedReply, ToolCall, ToolCallStreamer, ToolParser
from maxcli.serve.tool_parsers.hermes import HermesParser
from maxcli.serve.tool_parsers.llama3_json import Llama3JsonParser
from maxcli.serve.tool_parsers.mistral import MistralParser
from maxcli.serve.tool_parsers.pythonic import PythonicParser

__all__ = ["PARSER_NAMES", "ParsedReply", "ToolCall", "ToolCallStreamer", "ToolParser", "parser_for"]

PARSER_NAMES = ("auto", "hermes", "llama3_json", "mistral", "pythonic")

_PARSERS: dict[str, type[ToolParser]] = {
    cls.name: cls for cls in (HermesParser, Llama3JsonParser, MistralParser, PythonicParser)
}

# Template text -> format, first match wins. The pythonic instruction comes before `<|python_tag|>`:
# pythonic Llama templates keep the tag for the built-in tools.
_TEMPLATE_SIGNS = (
    ("<tool_call>", "hermes"),
    ("[TOOL_CALLS]", "mistral"),
    ("[func_name1(", "pythonic"),
    ('"parameters": dictionary of argument name', "llama3_json"),
    ("<|python_tag|>", "llama3_json"),
)


def detect_format(chat_template: str | None) -> str:
    """The tool-call format a chat template asks for; hermes when it shows none."""
    for sign, name in _TEMPLATE_SIGNS:
        if chat_template and sign in chat_template:
            return name
    return "hermes"


def parser_for(name: str, chat_template: str | None) -> ToolParser:
    if name not in PARSER_NAMES:
        raise ValueError(f"unknown tool-call parser {name!r}; choose one of: {', '.join(PARSER_NAMES)}")
    return _PARSERS[detect_format(chat_template) if name == "auto" else name]()
