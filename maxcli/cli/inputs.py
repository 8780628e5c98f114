"""Reading prompts from flags, stdin and files (shared by generate and encode), and structured-output flags."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from maxcli.interfaces import InputError


def collect_prompts(prompts: list[str] | None, prompt_file: Path | None) -> list[str]:
    """--prompt values in order ('-' reads all of stdin as one prompt), then one prompt per line of the file."""
    out: list[str] = []
    for p in prompts or []:
        out.append(sys.stdin.read().rstrip("\n") if p == "-" else p)
    if prompt_file is not None:
        if not prompt_file.is_file():
            raise InputError(f"prompt file not found: {prompt_file}")
        out.extend(line for line in prompt_file.read_text().splitlines() if line.strip())
    return out


def structured_options(json_schema: str | None, regex: str | None, choice: str | None, grammar: str | None) -> dict[str, Any]:
    """SamplingParams fields for --json-schema (a file or inline JSON), --regex, --choice a,b,c and --grammar
    (a file or inline text); InputError for more than one or an unreadable schema."""
    given = [name for name, v in (("--json-schema", json_schema), ("--regex", regex), ("--choice", choice),
                                   ("--grammar", grammar)) if v is not None]
    if len(given) > 1:
        raise InputError(f"use one of {' and '.join(given)}, not both")
    if json_schema is not None:
        text = _file_or_text(json_schema)
        try:
            schema = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--json-schema is neither a readable file nor JSON: {exc}") from None
        if not isinstance(schema, (dict, bool)):
            raise InputError("--json-schema must be a JSON object (a schema)")
        return {"json_schema": schema}
    if regex is not None:
        return {"regex": regex}
    if choice is not None:
        options = [c.strip() for c in choice.split(",") if c.strip()]
        if not options:
            raise InputError("--choice needs at least one non-empty option")
        return {"choice": options}
    if grammar is not None:
        return {"grammar": _file_or_text(grammar)}
    return {}


def _file_or_text(value: str) -> str:
    path = Path(value)
    try:
        if len(value) < 4096 and path.is_file():
            return path.read_text()
    except OSError:
        pass
    return value
