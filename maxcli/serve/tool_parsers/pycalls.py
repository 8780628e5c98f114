"""Python-syntax helpers for the pythonic format: where a bracketed Python expression ends in text that
is still arriving, and `[f(a=1), g()]` -> its (name, arguments JSON) pairs."""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from typing import Any

_OUTSIDE = re.compile(r"[^'\"()\[\]{}]*")
_IN_STRING = {"'": re.compile(r"[^'\\]*"), '"': re.compile(r'[^"\\]*')}
_JSON_NAMES = {"true": True, "false": False, "null": None}
_JSON_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


class PyEnd:
    """Finds the end of the bracketed Python expression that starts at `buf[0]` in a buffer that only
    grows. It tracks string literals (single, double, triple quoted, with escapes) and bracket depth, not
    validity: the span still has to be parsed."""

    def __init__(self) -> None:
        self._pos = 0  # buf[:_pos] is scanned
        self._depth = 0
        self._quote = ""  # the open string's delimiter: ', ", ''' or """; "" outside strings

    def scan(self, buf: str) -> int | None:
        """Index just past the closing bracket, or None while it has not arrived."""
        i, n = self._pos, len(buf)
        while i < n:
            quote = self._quote
            if quote:
                i = _IN_STRING[quote[0]].match(buf, i).end()
                if i >= n:
                    break
                if buf[i] == "\\":
                    if i + 1 >= n:
                        break  # the escaped character has not arrived
                    i += 2
                elif buf.startswith(quote, i):
                    i += len(quote)
                    self._quote = ""
                elif len(quote) == 3 and quote.startswith(buf[i:]):
                    break  # maybe the start of the closing triple quote
                else:
                    i += 1
                continue
            i = _OUTSIDE.match(buf, i).end()
            if i >= n:
                break
            c = buf[i]
            if c in "'\"":
                rest = buf[i:i + 3]
                if rest == c * 3:
                    self._quote, i = rest, i + 3
                elif rest == c * len(rest):
                    break  # `"` or `""` at the end: a string, or the start of a triple quote
                else:
                    self._quote, i = c, i + 1
                continue
            i += 1
            if c in "([{":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth <= 0:
                    self._pos = i
                    return i
        self._pos = i
        return None


class _NotLiteral(Exception):
    pass


class _HugeNumber(str):
    """A number literal beyond float range, kept as its JSON number text."""


def parse_call_list(text: str) -> list[tuple[str, str]] | None:
    """`[f(a=1, b="x"), g()]` -> [(name, arguments), ...], arguments being the keyword dict as
    `json.dumps(kwargs, ensure_ascii=False)` writes it. Values are Python literals or JSON's
    true/false/null; a double-quoted string with escapes is read as JSON when it is valid JSON (so `"\\/"`
    and surrogate pairs mean what they mean in JSON), and a number beyond float range keeps its JSON text.
    Anything else (no calls, positional or repeated arguments, non-literal values) -> None."""
    try:
        with warnings.catch_warnings():  # invalid escapes such as "\/" warn; their JSON reading is used
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    node = tree.body
    if not isinstance(node, ast.List) or not node.elts:
        return None
    calls = []
    try:
        for element in node.elts:
            if not isinstance(element, ast.Call) or element.args:
                return None
            name = _dotted_name(element.func)
            kwargs: dict[str, Any] = {}
            for keyword in element.keywords:
                if keyword.arg is None or keyword.arg in kwargs:
                    return None
                kwargs[keyword.arg] = _literal(keyword.value, text)
            arguments = _json(kwargs)
            arguments.encode("utf-8")  # no lone surrogates
            calls.append((name, arguments))
    except (_NotLiteral, ValueError, RecursionError):
        return None
    return calls


def _dotted_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return _dotted_name(node.value) + "." + node.attr
    raise _NotLiteral


def _literal(node: ast.expr, source: str) -> Any:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, str):
            return _string(node, source)
        if value is None or isinstance(value, (bool, int, float)):
            return _number(node, source, False) if isinstance(value, float) else value
        raise _NotLiteral
    if isinstance(node, ast.Name) and node.id in _JSON_NAMES:
        return _JSON_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = node.operand
        if isinstance(operand, ast.Constant) and type(operand.value) in (int, float):
            return _number(operand, source, isinstance(node.op, ast.USub))
        raise _NotLiteral
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal(e, source) for e in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            key = _literal(k, source) if k is not None else None
            if not isinstance(key, str):
                raise _NotLiteral
            out[key] = _literal(v, source)
        return out
    raise _NotLiteral


def _number(node: ast.Constant, source: str, negative: bool) -> Any:
    value = node.value
    if isinstance(value, float) and math.isinf(value):
        text = ("-" if negative else "") + (ast.get_source_segment(source, node) or "")
        if not _JSON_NUMBER.fullmatch(text):
            raise _NotLiteral
        return _HugeNumber(text)
    return -value if negative else value


def _json(value: Any) -> str:
    """json.dumps(value, ensure_ascii=False), but a _HugeNumber is written as its text."""
    if isinstance(value, _HugeNumber):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _string(node: ast.Constant, source: str) -> str:
    segment = ast.get_source_segment(source, node) or ""
    if "\\" in segment and segment.startswith('"') and not segment.startswith('"""'):
        try:
            decoded = json.loads(segment)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            return decoded
    return node.value
