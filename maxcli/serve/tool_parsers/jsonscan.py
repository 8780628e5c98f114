"""JSON helpers shared by the JSON-based formats: where a JSON object/array ends and whether a position is
inside a string literal, in text that is still arriving; the raw text of each top-level member of an
object or element of an array; and the (name, arguments) of a call object."""

from __future__ import annotations

import json
import re
from typing import Any

_DECODER = json.JSONDecoder()
_JSON_WS = " \t\n\r"
_IN_STRING = re.compile(r'[^"\\]*')
_OUTSIDE = re.compile(r'[^"{}\[\]]*')

ARGUMENT_KEYS = ("arguments", "parameters")


class JsonEnd:
    """Finds the end of the JSON object or array that starts at `buf[0]` in a buffer that only grows.
    It tracks string/escape state and bracket depth, not validity: the span it finds must still be
    validated (e.g. by `object_members`)."""

    def __init__(self) -> None:
        self._pos = 0  # buf[:_pos] is scanned
        self._depth = 0
        self._in_string = False
        self._escape = False

    def scan(self, buf: str) -> int | None:
        """Index just past the closing bracket, or None while it has not arrived."""
        i, n = self._pos, len(buf)
        while i < n:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    i += 1
                    continue
                i = _IN_STRING.match(buf, i).end()
                if i >= n:
                    break
                if buf[i] == "\\":
                    self._escape = True
                else:
                    self._in_string = False
                i += 1
                continue
            i = _OUTSIDE.match(buf, i).end()
            if i >= n:
                break
            c = buf[i]
            i += 1
            if c == '"':
                self._in_string = True
            elif c in "{[":
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth <= 0:
                    self._pos = i
                    return i
        self._pos = n
        return None


class JsonStrings:
    """Whether a position of a buffer that only grows is inside a JSON string literal, reading quotes and
    escapes from the buffer's start. Positions must be asked in increasing order."""

    def __init__(self) -> None:
        self._pos = 0
        self._in_string = False
        self._escape = False

    def inside(self, buf: str, upto: int) -> bool:
        i = self._pos
        while i < upto:
            if self._escape:
                self._escape = False
                i += 1
            elif self._in_string:
                i = _IN_STRING.match(buf, i, upto).end()
                if i < upto:
                    if buf[i] == "\\":
                        self._escape = True
                    else:
                        self._in_string = False
                    i += 1
            else:
                i = buf.find('"', i, upto)
                if i < 0:
                    i = upto
                else:
                    self._in_string = True
                    i += 1
        self._pos = upto
        return self._in_string or self._escape


def _skip_ws(s: str, i: int) -> int:
    n = len(s)
    while i < n and s[i] in _JSON_WS:
        i += 1
    return i


def object_members(text: str) -> dict[str, tuple[Any, str]] | None:
    """`text` (JSON whitespace around it allowed) is exactly one JSON object -> key -> (value, raw value
    text); a repeated key keeps its last value, as json.loads does. Anything else -> None."""
    s, members = text, {}
    i = _skip_ws(s, 0)
    if not s.startswith("{", i):
        return None
    i = _skip_ws(s, i + 1)
    if s.startswith("}", i):
        i += 1
    else:
        while True:
            if not s.startswith('"', i):
                return None
            try:
                key, i = _DECODER.raw_decode(s, i)
            except ValueError:
                return None
            i = _skip_ws(s, i)
            if not s.startswith(":", i):
                return None
            start = _skip_ws(s, i + 1)
            try:
                value, i = _DECODER.raw_decode(s, start)
            except ValueError:
                return None
            members[key] = (value, s[start:i])
            i = _skip_ws(s, i)
            if s.startswith(",", i):
                i = _skip_ws(s, i + 1)
            elif s.startswith("}", i):
                i += 1
                break
            else:
                return None
    return members if _skip_ws(s, i) == len(s) else None


def array_elements(text: str) -> list[str] | None:
    """`text` is exactly one JSON array -> the raw text of each element; anything else -> None."""
    s, out = text, []
    i = _skip_ws(s, 0)
    if not s.startswith("[", i):
        return None
    i = _skip_ws(s, i + 1)
    if s.startswith("]", i):
        i += 1
    else:
        while True:
            try:
                _, end = _DECODER.raw_decode(s, i)
            except ValueError:
                return None
            out.append(s[i:end])
            i = _skip_ws(s, end)
            if s.startswith(",", i):
                i = _skip_ws(s, i + 1)
            elif s.startswith("]", i):
                i += 1
                break
            else:
                return None
    return out if _skip_ws(s, i) == len(s) else None


def arguments_text(value: Any, raw: str) -> str | None:
    """The arguments' JSON object text: `raw` itself for an object, the decoded text for a JSON string
    that holds an object, None for anything else."""
    if isinstance(value, dict):
        return raw
    if isinstance(value, str):
        inner = value.strip()
        try:
            decoded = json.loads(inner)
        except ValueError:
            return None
        return inner if isinstance(decoded, dict) else None
    return None


def call_from_object(text: str, argument_keys: tuple[str, ...] = ARGUMENT_KEYS) -> tuple[str, str] | None:
    """A call object `{"name": "f", "arguments": {...}}` -> (name, arguments text). The first present key
    of `argument_keys` holds the arguments; none present means `{}`. Other keys are ignored. Not a JSON
    object, no non-empty string name, or arguments that are not an object -> None."""
    members = object_members(text)
    if members is None:
        return None
    name = members.get("name", (None, ""))[0]
    if not isinstance(name, str) or not name:
        return None
    for key in argument_keys:
        if key in members:
            args = arguments_text(*members[key])
            return None if args is None else (name, args)
    return name, "{}"
