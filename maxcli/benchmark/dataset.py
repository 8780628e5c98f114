"""Benchmark requests: random token-id prompts, or prompts and reply lengths from a ShareGPT JSON file."""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Union

from maxcli.benchmark import BenchmarkError


@dataclass
class BenchRequest:
    """One request: a prompt (text, or token ids sent as is), its token count, and tokens to generate."""

    prompt: Union[str, list[int]]
    prompt_len: int
    output_len: int


def random_requests(
    vocab_size: int, special_ids: set[int], num: int, input_len: int, output_len: int, seed: int
) -> list[BenchRequest]:
    """num prompts of exactly input_len token ids drawn uniformly from the vocabulary minus special tokens.
    Token-id prompts skip tokenization, so the engine sees exactly input_len tokens (a decoded-then-
    re-encoded random string would not re-tokenize to the same length)."""
    import numpy as np

    allowed = np.setdiff1d(np.arange(vocab_size), np.fromiter(special_ids, dtype=np.int64, count=len(special_ids)))
    if allowed.size == 0:
        raise BenchmarkError(f"the tokenizer has no non-special tokens to draw from (vocab size {vocab_size})")
    rng = np.random.default_rng(seed)
    ids = rng.choice(allowed, size=(num, input_len))
    return [BenchRequest([int(t) for t in row], input_len, output_len) for row in ids]


def read_sharegpt(path: Path) -> list[tuple[str, str | None]]:
    """(first human turn, first gpt reply after it or None) per conversation that has a human turn.

    The file is a JSON list of {"conversations": [{"from": "human"|"gpt"|..., "value": str}, ...]}; a
    file that is missing, not JSON, or of another shape is a BenchmarkError naming it."""
    if not path.is_file():
        raise BenchmarkError(f"dataset file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise BenchmarkError(f"dataset {path} is not UTF-8 text: {e.reason}") from None
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"dataset {path} is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    if not isinstance(data, list):
        raise BenchmarkError(f"dataset {path}: expected a JSON list of conversations, got {type(data).__name__}")
    pairs: list[tuple[str, str | None]] = []
    for i, entry in enumerate(data):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or not all(_is_turn(t) for t in turns):
            raise BenchmarkError(
                f'dataset {path}: entry {i} needs "conversations": a list of {{"from": str, "value": str}}'
            )
        human = next((k for k, t in enumerate(turns) if t["from"] in ("human", "user")), None)
        if human is None or not turns[human]["value"].strip():
            continue
        reply = next((t["value"] for t in turns[human + 1 :] if t["from"] in ("gpt", "assistant")), None)
        pairs.append((turns[human]["value"], reply))
    return pairs


def _is_turn(t: Any) -> bool:
    return isinstance(t, dict) and isinstance(t.get("from"), str) and isinstance(t.get("value"), str)


def sharegpt_requests(
    pairs: list[tuple[str, str | None]],
    count_tokens: Callable[[str], int],
    num: int,
    output_len: int | None,
    seed: int,
    max_length: int | None = None,
) -> list[BenchRequest]:
    """Up to num requests from the pairs, shuffled with seed. The output length is output_len, else the
    token count of the gpt reply; conversations without a (non-empty) reply then are skipped, as are
    those whose prompt plus output exceeds max_length. Fewer than num usable pairs give fewer requests."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    out: list[BenchRequest] = []
    for k in order:
        if len(out) == num:
            break
        prompt, reply = pairs[k]
        n_out = output_len if output_len is not None else (count_tokens(reply) if reply else 0)
        if n_out < 1:
            continue
        n_in = count_tokens(prompt)
        if max_length is not None and n_in + n_out > max_length:
            continue
        out.append(BenchRequest(prompt, n_in, n_out))
    if not out:
        raise BenchmarkError(
            "no usable conversations in the dataset (each needs a human turn"
            + (" and a non-empty gpt reply" if output_len is None else "")
            + (f" and at most {max_length} tokens in all)" if max_length is not None else ")")
        )
    return out


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Tokens in a text, without special tokens (the engine adds BOS itself: its count is exact)."""
    delegate = getattr(tokenizer, "delegate", tokenizer)
    return lambda text: len(delegate.encode(text, add_special_tokens=False))


def vocabulary(tokenizer: Any) -> tuple[int, set[int]]:
    """(vocab size, special token ids) of a maxcli TextTokenizer or a transformers tokenizer."""
    delegate = getattr(tokenizer, "delegate", tokenizer)
    return len(delegate), set(int(t) for t in getattr(delegate, "all_special_ids", []))


def arrival_offsets(num: int, request_rate: float, seed: int) -> list[float]:
    """Seconds after the start at which each request is sent: a Poisson process of request_rate per
    second (exponential gaps, the first request at 0), or all at 0 for an infinite rate."""
    if math.isinf(request_rate):
        return [0.0] * num
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(num):
        out.append(t)
        t += rng.expovariate(request_rate)
    return out
