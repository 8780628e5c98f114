"""Pieces of llguidance Lark grammars for forced tool calls: the tools' names and argument schemas,
string literals, embedded `%json` schemas, and format markers written as special tokens."""

from __future__ import annotations

import json
from typing import Any

from maxcli.engine.structured import with_json_layout


def tool_functions(tools: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """OpenAI tool dicts -> (name, arguments schema) per distinct name, in order. A missing `parameters`
    is `{"type": "object"}`; a schema without a type gets `"type": "object"` so it only admits objects."""
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name:
            raise ValueError(f"a tool without a function name: {tool!r}")
        out.setdefault(name, object_schema(fn.get("parameters"), name))
    if not out:
        raise ValueError("a forced tool call needs at least one tool")
    return list(out.items())


def object_schema(schema: Any, name: str) -> dict[str, Any]:
    if schema is None or schema is True:
        return {"type": "object"}
    if not isinstance(schema, dict):
        raise ValueError(f"tool {name!r}: parameters must be a JSON schema object")
    kind = schema.get("type")
    if kind is None:
        return {**schema, "type": "object"}
    if kind == "object":
        return schema
    if isinstance(kind, list) and "object" in kind:
        return {**schema, "type": "object"}
    raise ValueError(f"tool {name!r}: parameters must describe an object, not {kind!r}")


def lark_string(text: str) -> str:
    """A Lark string literal matching exactly `text`."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


def json_value(schema: Any) -> str:
    """An embedded JSON value matching `schema` (a schema's own "x-guidance" options are kept)."""
    return "%json " + json.dumps(with_json_layout(schema), ensure_ascii=False)


def json_text(value: Any) -> str:
    """`value` as JSON text the way the grammars write it (a name, a key)."""
    return json.dumps(value, ensure_ascii=False)


def special_token(marker: str, tokenizer: Any) -> int | None:
    """The id of the single special token that `tokenizer` (an llguidance.LLTokenizer) makes of
    `marker`, or None."""
    if tokenizer is None:
        return None
    ids = tokenizer.tokenize_str(marker, parse_special=True)
    if len(ids) == 1 and tokenizer.is_special_token(ids[0]):
        return int(ids[0])
    return None


def marker(text: str, tokenizer: Any) -> str:
    """`text` as a grammar symbol: its special token where the tokenizer has one (llguidance never
    matches a special token against plain text), else the plain string."""
    token = special_token(text, tokenizer)
    return lark_string(text) if token is None else f"<[{token}]>"


def alternatives(name: str, bodies: list[str]) -> str:
    return f"{name}: " + "\n    | ".join(bodies)


def repeated(item: str, separator: str, parallel: bool) -> str:
    """One `item`, or with `parallel` one or more separated by the literal `separator`."""
    return f"{item} ({lark_string(separator)} {item})*" if parallel else item
