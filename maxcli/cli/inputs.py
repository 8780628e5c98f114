"""Reading prompts from flags, stdin and files (shared by generate and encode)."""

from __future__ import annotations

import sys
from pathlib import Path

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
