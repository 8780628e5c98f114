"""Function tools on the chat route: what the chat template sees, how a reply becomes `tool_calls`, and
the grammar that makes `tool_choice` "required" or a named function hold for every reply.

- "none" (or no tools): the template gets no tools and replies are plain text.
- "auto" (the default with tools): the template gets the tools; the reply is parsed for calls (in the
  parser's format, or as a bare call object naming one of the tools).
- "required" / {"type": "function", ...}: as auto, and decoding is constrained by the parser's grammar,
  so the reply is always one call (several with parallel_tool_calls) whose arguments match the schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from maxcli.interfaces import InputError
from maxcli.serve.errors import APIError
from maxcli.serve.schemas import ChatCompletionRequest, NamedToolChoice
from maxcli.serve.tool_parsers import ParsedReply, ToolCall, ToolCallStreamer, ToolParser, parser_for


@dataclass
class ToolPlan:
    template_tools: list[dict[str, Any]] | None
    parser: ToolParser | None
    grammar: str | None  # forced-call grammar, or None
    parallel: bool = True

    @property
    def tool_names(self) -> set[str]:
        return {t["function"]["name"] for t in self.template_tools or []}

    def parse(self, text: str) -> ParsedReply:
        assert self.parser is not None
        reply = self.parser.parse(text)
        if not reply.tool_calls:
            bare = bare_json_call(text, self.tool_names)
            if bare is not None:
                reply = ParsedReply(None, [bare])
        if not self.parallel and len(reply.tool_calls) > 1:
            reply.tool_calls = reply.tool_calls[:1]
        return reply

    def streamer(self) -> "ToolCallStreamer | None":
        if self.parser is None:
            return None
        return _BareJSONAware(self, self.parser.streamer())

    def deltas(self, streamer: "ToolCallStreamer | None", text: str, finished: bool) -> list[dict[str, Any]]:
        """Chat-style deltas ({"content"} or {"tool_calls"}) of one output step of a streamed reply, read by
        this plan's `streamer()`; without parallel_tool_calls only the first call (index 0) is sent, as the
        non-streamed reply does."""
        if streamer is None:
            return [{"content": text}] if text else []
        deltas = streamer.push(text) if text else []
        if finished:
            deltas += streamer.finish()
        if self.parallel:
            return deltas
        kept = []
        for d in deltas:
            calls = [c for c in d.get("tool_calls", []) if c.get("index", 0) == 0]
            if "tool_calls" in d and not calls:
                continue
            kept.append({**d, "tool_calls": calls} if "tool_calls" in d else d)
        return kept


def bare_json_call(text: str, names: set[str]) -> ToolCall | None:
    """A reply that is nothing but one call object, `{"name": <a tool>, "arguments": {...}}` (or
    "parameters"), bare or in a ```json fence: small models often drop their format's markers."""
    body = text.strip()
    if body.startswith("```"):
        body = body[3:]
        body = body[4:] if body.startswith("json") else body
        if not body.rstrip().endswith("```"):
            return None
        body = body.rstrip()[:-3]
    try:
        obj = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict) or set(obj) - {"name", "arguments", "parameters"}:
        return None
    return ToolCall(name=obj["name"], arguments=json.dumps(args, ensure_ascii=False))


class _BareJSONAware(ToolCallStreamer):
    """The parser's streamer, except that a reply opening with "{" or "```" is held until it ends and then
    sent as the non-streamed parse would read it, so streamed and non-streamed replies always agree."""

    def __init__(self, plan: ToolPlan, inner: ToolCallStreamer) -> None:
        self._plan, self._inner = plan, inner
        self._head = ""  # text before the first non-blank character decides the mode
        self._mode: str | None = None  # "inner" | "hold"

    def push(self, delta: str) -> list[dict[str, Any]]:
        if self._mode == "inner":
            return self._inner.push(delta)
        self._head += delta
        if self._mode is None:
            stripped = self._head.lstrip()
            if not stripped:
                return []
            self._mode = "hold" if stripped[0] in "{`" else "inner"
            if self._mode == "inner":
                return self._inner.push(self._head)
        return []

    def finish(self) -> list[dict[str, Any]]:
        if self._mode == "inner":
            return self._inner.finish()
        if not self._head:
            return []
        reply = self._plan.parse(self._head)
        if not reply.tool_calls:
            return [{"content": reply.content}] if reply.content else []
        out: list[dict[str, Any]] = [{"content": reply.content}] if reply.content else []
        for i, call in enumerate(reply.tool_calls):
            out.append({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                                        "function": {"name": call.name, "arguments": ""}}]})
            out.append({"tool_calls": [{"index": i, "function": {"arguments": call.arguments}}]})
        return out


def plan_tools(body: ChatCompletionRequest, parser_name: str, chat_template: str | None, grammars: Any) -> ToolPlan:
    """`grammars`: the engine's GrammarCompiler. Forced-call grammars are written against its llguidance
    tokenizer, so a format's markers (Qwen's <tool_call>, Mistral's [TOOL_CALLS]) are the special tokens
    the model emits."""
    if not body.tools or body.tool_choice == "none":
        return ToolPlan(None, None, None)
    tools = [t.model_dump(exclude_none=True) for t in body.tools]
    try:
        parser = parser_for(parser_name, chat_template)
    except ValueError as exc:
        raise APIError(400, str(exc), param="tools") from None
    parallel = body.parallel_tool_calls is not False
    choice = body.tool_choice or "auto"
    if choice == "auto":
        return ToolPlan(tools, parser, None, parallel)
    try:
        grammar_tokenizer = grammars.ll_tokenizer
    except InputError as exc:
        raise APIError(400, f"tool_choice {'required' if choice == 'required' else 'named'} needs structured "
                       f"output: {exc}", param="tool_choice") from None
    if isinstance(choice, NamedToolChoice):
        forced = [t for t in tools if t["function"]["name"] == choice.function.name]
        parallel = False
    else:
        forced = tools
    try:
        grammar = parser.forced_grammar(forced, parallel, tokenizer=grammar_tokenizer)
    except Exception as exc:  # noqa: BLE001 - a schema the grammar builder cannot express
        raise APIError(400, f"cannot enforce tool_choice for these tools: {exc}", param="tools") from None
    return ToolPlan(tools, parser, grammar, parallel)


def message_for(plan: ToolPlan, text: str) -> tuple[dict[str, Any], bool]:
    """The assistant message of a finished reply, and whether it calls tools."""
    if plan.parser is None:
        return {"role": "assistant", "content": text}, False
    reply = plan.parse(text)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return message, bool(reply.tool_calls)
