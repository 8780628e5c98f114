"""`maxcli generate` with structured-output flags on the real SmolLM2 GGUF: the constraint holds in the printed
JSON, a schema file works, and bad constraints are one line on stderr with a non-zero exit."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli_errors import assert_one_line_error


def generate(model: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "maxcli", "generate", "--model", str(model), "--json", "--max-new-tokens", "40",
         "--temperature", "1.0", *flags],
        capture_output=True, text=True, timeout=300,
    )


def test_choice_regex_and_schema_file(smollm2_gguf: Path, tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12},
                                              "rank": {"type": "integer", "minimum": 1, "maximum": 9}},
              "required": ["city", "rank"], "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    runs = {
        "choice": generate(smollm2_gguf, "--prompt", "Pick a colour:", "--prompt", "Another:", "--choice", "red,green,blue"),
        "regex": generate(smollm2_gguf, "--prompt", "A time:", "--regex", r"[0-2][0-9]:[0-5][0-9]"),
        "schema": generate(smollm2_gguf, "--prompt", "A city as JSON:", "--json-schema", str(tmp_path / "schema.json")),
    }
    for name, run in runs.items():
        assert run.returncode == 0, (name, run.stderr)
    choices = [json.loads(line)["text"] for line in runs["choice"].stdout.splitlines()]
    assert len(choices) == 2 and set(choices) <= {"red", "green", "blue"}
    assert re.fullmatch(r"[0-2][0-9]:[0-5][0-9]", json.loads(runs["regex"].stdout)["text"])
    city = json.loads(json.loads(runs["schema"].stdout)["text"])
    assert set(city) == {"city", "rank"} and 1 <= city["rank"] <= 9


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--json-schema", '{"type": "objectx"}'], "invalid json_schema"),
        (["--json-schema", "{not json"], "neither a readable file nor JSON"),
        (["--regex", "a(b"], "invalid regex"),
        (["--regex", "a", "--choice", "b"], "use one of"),
        (["--grammar", "start: missing_rule"], "invalid grammar"),
    ],
)
def test_bad_constraints_are_one_line(smollm2_gguf: Path, flags: list[str], needle: str) -> None:
    run = generate(smollm2_gguf, "--prompt", "x", *flags)
    assert_one_line_error(run, needle)
