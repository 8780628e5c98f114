"""Shared pieces of the generation tests: greedy params and the real model's sizes."""

from __future__ import annotations

from typing import Any

from maxcli.interfaces import SamplingParams

# Shared by the tests that load the real model: small enough for a 2-core machine, big enough for
# every prompt here (the scheduler needs max_length / page_size <= pages).
MAX_LENGTH = 256
NUM_PAGES = 64


def greedy(max_new_tokens: int = 16, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, **kw)


def token_ids(outputs: list[Any]) -> list[list[int]]:
    return [o.token_ids for o in outputs]
