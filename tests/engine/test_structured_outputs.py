"""Constrained decoding offline on the real SmolLM2 GGUF (the default quantized CPU path): regex, choice and
JSON-schema constraints hold for sampled outputs, unconstrained rows of the same batch are untouched,
logit_bias moves tokens, and bad grammars are one-line InputErrors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

import jsonschema
import pytest

from maxcli import LLM
from maxcli.config import PipelineConfig
from maxcli.interfaces import InputError, SamplingParams

PROMPTS = ["My phone number is", "Call me at", "The code is", "Write anything:", "Numbers:"]


@pytest.fixture(scope="module")
def llm(smollm2_gguf: Path) -> Iterator[LLM]:
    engine = LLM.from_config(PipelineConfig(model_path=str(smollm2_gguf), max_batch_size=32, max_length=512))
    yield engine


def _prompts(n: int) -> list[str]:
    return [PROMPTS[i % len(PROMPTS)] for i in range(n)]


def test_regex_holds_for_100_sampled_outputs(llm: LLM) -> None:
    pattern = r"[0-9]{3}-[0-9]{4}( ext\. [0-9]{1,3})?"
    sp = SamplingParams(max_new_tokens=24, temperature=1.0, seed=1, regex=pattern)
    outs = llm.generate(_prompts(100), [SamplingParams(**{**sp.__dict__, "seed": i}) for i in range(100)])
    texts = [o.text for o in outs]
    assert all(re.fullmatch(pattern, t) for t in texts), [t for t in texts if not re.fullmatch(pattern, t)][:5]
    assert all(o.finish_reason == "stop" for o in outs)
    assert len(set(texts)) > 10  # sampled, not one forced string


def test_choice_holds_for_100_sampled_outputs(llm: LLM) -> None:
    options = ["red", "green", "blue", "dark purple"]
    params = [SamplingParams(max_new_tokens=5, temperature=1.0, seed=i, choice=options) for i in range(100)]
    outs = llm.generate(["My favourite colour is"] * 100, params)
    seen = [o.text for o in outs]
    assert set(seen) <= set(options), set(seen) - set(options)
    assert len(set(seen)) >= 2


def test_json_schema_sampled_outputs_validate(llm: LLM) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog", "fish"]}, "maxItems": 3},
        },
        "required": ["name", "age", "pets"],
        "additionalProperties": False,
    }
    params = [SamplingParams(max_new_tokens=100, temperature=1.0, seed=i, json_schema=schema) for i in range(8)]
    outs = llm.generate(["Describe a person as JSON:"] * 8, params)
    for o in outs:
        assert o.finish_reason == "stop", o.text
        jsonschema.validate(json.loads(o.text), schema)


def test_unconstrained_rows_are_unchanged_by_constrained_neighbours(llm: LLM) -> None:
    greedy = SamplingParams(max_new_tokens=16, temperature=0.0)
    solo = llm.generate(["The capital of France is"], greedy)[0]
    mixed = llm.generate(
        ["The capital of France is", "A date:", "Pick one:"],
        [greedy, SamplingParams(max_new_tokens=16, temperature=0.0, regex=r"\d\d\d\d-\d\d-\d\d"),
         SamplingParams(max_new_tokens=4, temperature=0.0, choice=["alpha", "beta"])],
    )
    assert mixed[0].token_ids == solo.token_ids
    assert mixed[2].text in ("alpha", "beta")


def test_logit_bias_forces_and_bans_tokens(llm: LLM) -> None:
    tok = llm.engine.tokenizer
    target = tok.delegate.encode(" banana", add_special_tokens=False)[0]
    forced = llm.generate(["I like"], SamplingParams(max_new_tokens=3, temperature=0.0, logit_bias={target: 100.0}))[0]
    assert forced.token_ids == [target] * 3
    plain = llm.generate(["The capital of France is"], SamplingParams(max_new_tokens=4, temperature=0.0))[0]
    first = plain.token_ids[0]
    banned = llm.generate(["The capital of France is"],
                          SamplingParams(max_new_tokens=4, temperature=0.0, logit_bias={first: -100.0}))[0]
    assert banned.token_ids[0] != first


def test_logprobs_under_a_constraint_cover_allowed_tokens_only(llm: LLM) -> None:
    out = llm.generate(["Answer yes or no:"], SamplingParams(max_new_tokens=4, temperature=0.0, logprobs=5,
                                                             choice=["yes", "no"]))[0]
    assert out.text in ("yes", "no")
    first_top = out.logprobs.top_log_probabilities[0]
    texts = {llm.engine.tokenizer.delegate.decode([t]).strip() for t, lp in first_top.items() if lp > float("-inf")}
    assert texts and all("yes".startswith(t) or "no".startswith(t) for t in texts), texts
    assert out.logprobs.token_log_probabilities[0] > float("-inf")


def test_grammar_that_does_not_end_finishes_by_length_and_frees_pages(llm: LLM) -> None:
    kv = llm.engine.pipeline.kv_manager
    out = llm.generate(["Go:"], SamplingParams(max_new_tokens=12, temperature=1.0, seed=0, grammar='start: "ab"+'))[0]
    assert out.finish_reason == "length" and re.fullmatch(r"(ab)*a?", out.text)
    assert kv.num_used_blocks == 0


def test_lark_and_gbnf_grammars(llm: LLM) -> None:
    lark = llm.generate(["Go:"], SamplingParams(max_new_tokens=10, temperature=0.0, grammar='start: "x" /[0-9]/ "y"'))[0]
    assert re.fullmatch(r"x[0-9]y", lark.text)
    gbnf = llm.generate(["Go:"], SamplingParams(max_new_tokens=10, temperature=0.0, grammar='root ::= "a" [0-9] "b"'))[0]
    assert re.fullmatch(r"a[0-9]b", gbnf.text)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"json_schema": {"type": "objectx"}}, "invalid json_schema"),
        ({"regex": "a(b"}, "invalid regex"),
        ({"grammar": "start: undefined_rule"}, "invalid grammar"),
        ({"regex": "a", "choice": ["b"]}, "at most one structured-output constraint"),
        ({"choice": []}, "choice must be a non-empty list"),
        ({"logit_bias": {10**9: 1.0}}, "outside the vocabulary"),
        ({"logit_bias": {5: 500.0}}, "logit_bias values"),
    ],
)
def test_bad_constraints_are_input_errors(llm: LLM, fields: dict, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        llm.generate(["x"], SamplingParams(max_new_tokens=4, **fields))
    assert "\n" not in str(info.value)
