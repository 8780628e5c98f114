"""A Responses API reply built from chat-style deltas: output items (messages and function calls) and the
typed stream events that announce them, in the order the `openai` client's `responses.stream()` checks.

The same builder serves both modes: a non-streamed reply pushes the parsed message once; a streamed one
pushes each delta of the tool-call streamer. Events are only kept when `emit` is set, so the final items
are identical either way (ids included: the client matches `output_item.done` against `output_item.added`).
"""

from __future__ import annotations

import json
import uuid
from typing import Any


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class OutputBuilder:
    def __init__(self, emit: bool) -> None:
        self.items: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []  # pending events; the caller drains them
        self._emit = emit
        self._open: dict[str, Any] | None = None  # the item still receiving deltas
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> function_call item

    def _event(self, kind: str, **fields: Any) -> None:
        if self._emit:
            self.events.append({"type": kind, **fields})

    def _index(self, item: dict[str, Any]) -> int:
        return self.items.index(item)

    # -- message text -----------------------------------------------------------------------------------

    def text(self, delta: str) -> None:
        item = self._open
        if item is None or item["type"] != "message":
            self._close()
            item = self._open = {"id": _id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                                 "content": []}
            self.items.append(item)
            self._event("response.output_item.added", output_index=self._index(item), item=_copy(item))
            item["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            self._event("response.content_part.added", item_id=item["id"], output_index=self._index(item),
                        content_index=0, part=_copy(item["content"][0]))
        if delta:
            item["content"][0]["text"] += delta
            self._event("response.output_text.delta", item_id=item["id"], output_index=self._index(item),
                        content_index=0, delta=delta, logprobs=[])

    # -- function calls ---------------------------------------------------------------------------------

    def call(self, index: int, call_id: str | None, name: str | None, arguments: str) -> None:
        item = self._calls.get(index)
        if item is None:
            self._close()
            item = self._open = {"id": _id("fc"), "type": "function_call", "status": "in_progress",
                                 "call_id": call_id or _id("call"), "name": name or "", "arguments": ""}
            self._calls[index] = item
            self.items.append(item)
            self._event("response.output_item.added", output_index=self._index(item), item=_copy(item))
        if arguments:
            item["arguments"] += arguments
            self._event("response.function_call_arguments.delta", item_id=item["id"],
                        output_index=self._index(item), delta=arguments)

    def push(self, delta: dict[str, Any]) -> None:
        """One chat-style delta: {"content": text} or {"tool_calls": [{index, id?, function{name?, arguments}}]}."""
        if delta.get("content"):
            self.text(delta["content"])
        for call in delta.get("tool_calls") or []:
            fn = call.get("function") or {}
            self.call(call.get("index", 0), call.get("id"), fn.get("name"), fn.get("arguments") or "")

    def push_message(self, message: dict[str, Any]) -> None:
        """A finished chat message (content and tool_calls)."""
        if message.get("content"):
            self.text(message["content"])
        for i, call in enumerate(message.get("tool_calls") or []):
            self.call(i, call["id"], call["function"]["name"], call["function"]["arguments"])

    # -- ending -----------------------------------------------------------------------------------------

    def _close(self, status: str = "completed") -> None:
        item, self._open = self._open, None
        if item is None:
            return
        item["status"] = status
        at = self._index(item)
        if item["type"] == "message":
            part = item["content"][0]
            self._event("response.output_text.done", item_id=item["id"], output_index=at, content_index=0,
                        text=part["text"], logprobs=[])
            self._event("response.content_part.done", item_id=item["id"], output_index=at, content_index=0,
                        part=_copy(part))
        else:
            self._event("response.function_call_arguments.done", item_id=item["id"], output_index=at,
                        name=item["name"], arguments=item["arguments"])
        self._event("response.output_item.done", output_index=at, item=_copy(item))

    def finish(self, incomplete: bool) -> list[dict[str, Any]]:
        """Close the open item (a reply with no output at all gets one empty message) and return the items;
        a reply cut short by the token limit leaves its last item "incomplete"."""
        if not self.items:
            self.text("")
        self._close("incomplete" if incomplete else "completed")
        return self.items


def conversation_messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reply's items as chat messages, for a later turn that names this response as its previous one."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    for item in items:
        if item["type"] == "message":
            message["content"] = (message["content"] or "") + item["content"][0]["text"]
        else:
            message.setdefault("tool_calls", []).append(
                {"id": item["call_id"], "type": "function",
                 "function": {"name": item["name"], "arguments": item["arguments"]}})
    return [message]


def _copy(value: Any) -> Any:
    return json.loads(json.dumps(value))
