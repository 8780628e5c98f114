"""Constrained decoding with llguidance: JSON schema, JSON object, regex, choice and Lark/GBNF grammars.

- `GrammarCompiler` (one per engine): llguidance's view of the tokenizer, built once on first use
  (~0.8 s for a 151k vocabulary), and one compiled matcher per distinct grammar (LRU), deep-copied for
  each request (~10 us). A grammar that does not compile is an InputError naming the problem.
- Each constrained request owns a `TokenConstraint` in `context.extra`; unconstrained rows never touch
  this module.
- `start_masks` computes the next-token bitmask of every constrained row of a batch on a worker thread
  (llguidance releases the GIL), so the work overlaps the forward pass; the sampler waits for it only
  when it needs the masks. `advance` feeds each sampled token back to its matcher.

Invariant: a constraint's matcher has consumed exactly the request's output tokens so far (tokens are
appended once and never rolled back; preemption recomputes KV pages, not tokens).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from maxcli.interfaces import InputError, SamplingParams

CONSTRAINT_KEY = "structured_constraint"
_MAX_CACHED_GRAMMARS = 256


@dataclass
class TokenConstraint:
    """One request's grammar state, plus the time spent computing its masks (for /metrics)."""

    matcher: Any  # llguidance.LLMatcher
    kind: str
    vocab_size: int  # the model's logits width, which the mask covers
    mask_seconds: float = 0.0
    mask_steps: int = 0


# json.dumps's separators and no other whitespace (a schema's own "x-guidance" options win): free
# whitespace lets a sampled model run away in newlines until max_tokens cuts the JSON off.
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def with_json_layout(schema: Any) -> Any:
    """`schema` (a dict, or True for any value) with JSON_LAYOUT unless it sets its own x-guidance."""
    if schema is True:
        schema = {}
    if isinstance(schema, dict) and "x-guidance" not in schema:
        schema = {**schema, "x-guidance": JSON_LAYOUT}
    return schema


def grammar_text(sp: SamplingParams) -> str | None:
    """llguidance's grammar definition for the request's constraint, or None when it has none."""
    import llguidance

    kinds = sp.structured_kinds
    if not kinds:
        return None
    kind = kinds[0]
    try:
        if kind == "json_schema":
            schema = json.loads(sp.json_schema) if isinstance(sp.json_schema, str) else sp.json_schema
            return llguidance.grammar_from("json_schema", json.dumps(with_json_layout(schema)))
        if kind == "json_object":
            return llguidance.grammar_from("json_schema", json.dumps(with_json_layout({"type": "object"})))
        if kind == "regex":
            return llguidance.grammar_from("regex", sp.regex)  # type: ignore[arg-type]
        if kind == "choice":
            return llguidance.grammar_from("choice", json.dumps(sp.choice))
        text = sp.grammar or ""
        return llguidance.grammar_from("gbnf" if "::=" in text else "lark", text)
    except Exception as exc:  # noqa: BLE001 - invalid JSON text, a GBNF grammar that does not convert, ...
        raise InputError(f"invalid {kind} for structured output: {_one_line(str(exc))}") from None


class GrammarCompiler:
    """Compiles and caches grammars for one tokenizer; thread-safe (the server validates on its engine thread,
    benchmarks and tests may call from others)."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._ll_tokenizer: Any = None
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()

    @property
    def ll_tokenizer(self) -> Any:
        """llguidance's tokenizer (InputError when the model's tokenizer is not a `tokenizers` one)."""
        with self._tokenizer_lock:
            if self._ll_tokenizer is None:
                import llguidance

                backend = _tokenizers_backend(self._tokenizer)
                eos = sorted(self._tokenizer.eos_token_ids) or [self._tokenizer.eos]
                self._ll_tokenizer = llguidance.LLTokenizer(backend.to_str(), n_vocab=self._vocab_size, eos_token=eos)
            return self._ll_tokenizer

    def prepare(self) -> None:
        """Build the tokenizer view ahead of the first constrained request (servers call it on a thread)."""
        try:
            self.ll_tokenizer
        except InputError:
            pass

    def constraint(self, sp: SamplingParams) -> TokenConstraint | None:
        """A fresh constraint for the request (None when it has none); InputError when it cannot compile."""
        text = grammar_text(sp)
        if text is None:
            return None
        with self._lock:
            proto = self._cache.get(text)
            if proto is None:
                proto = self._compile(text, sp.structured_kinds[0])
                self._cache[text] = proto
                if len(self._cache) > _MAX_CACHED_GRAMMARS:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(text)
            return TokenConstraint(proto.deep_copy(), sp.structured_kinds[0], self._vocab_size)

    def _compile(self, text: str, kind: str) -> Any:
        import llguidance

        try:
            matcher = llguidance.LLMatcher(self.ll_tokenizer, text, log_level=0)
        except Exception as exc:  # noqa: BLE001 - llguidance reports most problems as an error state instead
            raise InputError(f"invalid {kind} for structured output: {_one_line(str(exc))}") from None
        if matcher.is_error():
            raise InputError(f"invalid {kind} for structured output: {_one_line(matcher.get_error())}")
        return matcher


def _tokenizers_backend(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` behind a TextTokenizer (GGUF TokenizerFile or a transformers fast tokenizer)."""
    delegate = getattr(tokenizer, "delegate", tokenizer)
    for attr in ("_tokenizer", "backend_tokenizer"):
        backend = getattr(delegate, attr, None)
        if backend is not None and hasattr(backend, "to_str"):
            return backend
    raise InputError("structured output needs a fast (tokenizers-library) tokenizer; this model's has none")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else "unknown error"


# -- per step -------------------------------------------------------------------------------------------


_WORKER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-masks")


@dataclass
class TokenMasks:
    """Bitmasks (int32 [R, ceil(V/32)], bit j of word w allows token 32w + j) for rows `rows` of a batch,
    being computed on the worker thread until `result()` returns."""

    rows: list[int]
    constraints: list[TokenConstraint]
    bitmask: torch.Tensor
    future: Future
    seconds: float = 0.0  # wall time of the mask computation, set by the worker

    def result(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(row indices [R] int64, the bitmask words [R, W] int32, rows that allow nothing); blocks until the
        masks are ready, and books the time they took."""
        self.future.result()
        share = self.seconds / len(self.constraints)
        for c in self.constraints:
            c.mask_seconds += share
            c.mask_steps += 1
        words = self.bitmask
        empty = [self.rows[j] for j in torch.nonzero(~words.ne(0).any(dim=1)).flatten().tolist()]
        return torch.tensor(self.rows, dtype=torch.int64), words, empty


def start_masks(contexts: Sequence[Any]) -> TokenMasks | None:
    """Start computing the masks of the constrained contexts (row i = contexts[i]); None when none is."""
    rows = [i for i, c in enumerate(contexts) if CONSTRAINT_KEY in c.extra]
    if not rows:
        return None
    constraints = [contexts[i].extra[CONSTRAINT_KEY] for i in rows]
    bitmask = torch.zeros(len(rows), (constraints[0].vocab_size + 31) // 32, dtype=torch.int32)

    row_bytes = bitmask.shape[1] * bitmask.element_size()
    base = bitmask.data_ptr()
    masks = TokenMasks(rows, constraints, bitmask, Future())

    def fill() -> None:
        # One matcher after another on this thread, each call releasing the GIL. Not llguidance's LLExecutor:
        # its thread pool would compete with the forward pass's threads for the cores.
        t0 = time.perf_counter()
        for j, c in enumerate(constraints):
            c.matcher.unsafe_compute_mask_ptr(base + j * row_bytes, row_bytes)
        masks.seconds = time.perf_counter() - t0

    masks.future = _WORKER.submit(fill)
    return masks


def advance(contexts: Sequence[Any], tokens: Sequence[int]) -> None:
    """Feed each constrained context its sampled token."""
    for ctx, tok in zip(contexts, tokens):
        constraint = ctx.extra.get(CONSTRAINT_KEY)
        if constraint is not None and not constraint.matcher.is_stopped():
            constraint.matcher.consume_token(int(tok))
