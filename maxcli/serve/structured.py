"""Request fields that constrain the output (OpenAI's `response_format` and `logit_bias`, vLLM's
`structured_outputs` and older `guided_*` extras) as SamplingParams fields. One constraint per request:
naming two is a 400, as is combining one with a forced tool call."""

from __future__ import annotations

from typing import Any

from maxcli.serve.errors import APIError
from maxcli.serve.schemas import SamplingFields


def constraint_fields(body: SamplingFields, tool_grammar: str | None = None) -> dict[str, Any]:
    """SamplingParams keyword arguments for the body's constraint and logit bias."""
    given: list[tuple[str, dict[str, Any]]] = []
    rf = body.response_format
    if rf is not None and rf.type == "json_object":
        given.append(("response_format", {"json_object": True}))
    elif rf is not None and rf.type == "json_schema":
        schema = rf.json_schema.json_schema if rf.json_schema is not None else None
        given.append(("response_format", {"json_schema": schema if schema is not None else {"type": "object"}}))
    so = body.structured_outputs
    if so is not None:
        for name, field, value in (("json", "json_schema", so.json_), ("regex", "regex", so.regex),
                                   ("choice", "choice", so.choice), ("grammar", "grammar", so.grammar)):
            if value is not None:
                given.append((f"structured_outputs.{name}", {field: value}))
        if so.json_object:
            given.append(("structured_outputs.json_object", {"json_object": True}))
    for name, field in (("guided_json", "json_schema"), ("guided_regex", "regex"), ("guided_choice", "choice"),
                        ("guided_grammar", "grammar")):
        value = getattr(body, name)
        if value is not None:
            given.append((name, {field: value}))
    if tool_grammar is not None:
        given.append(("tool_choice", {"grammar": tool_grammar}))
    if len(given) > 1:
        names = ", ".join(name for name, _ in given)
        raise APIError(400, f"one output constraint per request, got {names}", param=given[1][0])
    fields: dict[str, Any] = dict(given[0][1]) if given else {}
    if body.logit_bias:
        fields["logit_bias"] = {int(k): float(v) for k, v in body.logit_bias.items()}
    return fields
