"""Per-request state. Pipelines are stateless: everything a request carries between steps lives here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from maxcli.interfaces import GenerationStatus, LogProbabilities, RequestID, SamplingParams


@dataclass(eq=False)
class TextContext:
    """Tokens of one request (prompt then generated) and how far the KV cache has processed them.

    Invariant: 0 <= num_computed_tokens <= len(tokens); the tokens in [num_computed_tokens, len(tokens))
    are the ones the next forward pass must feed (the whole prompt at first, then one token per step).
    """

    request_id: RequestID
    tokens: list[int]
    max_length: int
    sampling_params: SamplingParams = field(default_factory=SamplingParams)
    eos_token_ids: frozenset[int] = frozenset()
    prompt_len: int = -1
    num_computed_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache on the last (re)start
    status: GenerationStatus = GenerationStatus.ACTIVE
    log_probabilities: LogProbabilities | None = None
    prompt_log_probabilities: LogProbabilities | None = None
    arrival_time: float = field(default_factory=time.monotonic)
    first_token_time: float | None = None
    num_preemptions: int = 0
    scheduled_tokens: int | None = None  # tokens the next forward feeds (a prefill chunk); None: all active
    extra: dict[str, Any] = field(default_factory=dict)  # architecture-specific inputs (images, ...)
    lora_name: str | None = None  # the LoRA adapter this request runs with (None: the base model)

    def __post_init__(self) -> None:
        self.tokens = list(self.tokens)
        if self.prompt_len < 0:
            self.prompt_len = len(self.tokens)

    @property
    def prompt_tokens(self) -> list[int]:
        return self.tokens[: self.prompt_len]

    @property
    def output_token_ids(self) -> list[int]:
        return self.tokens[self.prompt_len :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.tokens) - self.prompt_len

    @property
    def current_length(self) -> int:
        return len(self.tokens)

    @property
    def active_length(self) -> int:
        """Tokens the next forward pass must process for this request."""
        return len(self.tokens) - self.num_computed_tokens

    @property
    def next_chunk_length(self) -> int:
        """Tokens the next forward feeds: the scheduled chunk, else everything not yet in the cache."""
        n = self.scheduled_tokens
        return self.active_length if n is None else min(n, self.active_length)

    @property
    def is_done(self) -> bool:
        return self.status.is_done

    @property
    def max_new_tokens(self) -> int:
        """Output tokens still allowed by max_new_tokens and the context limit together."""
        room = self.max_length - self.prompt_len
        n = self.sampling_params.max_new_tokens
        return room if n is None else min(n, room)

    def append_token(self, token: int) -> None:
        if self.first_token_time is None:
            self.first_token_time = time.monotonic()
        self.tokens.append(int(token))

    def reset_for_recompute(self) -> None:
        """Preemption by recompute: the KV cache is dropped; prompt and outputs are fed again."""
        self.num_computed_tokens = 0
        self.num_cached_tokens = 0
        self.num_preemptions += 1


@dataclass(eq=False)
class TextAndVisionContext(TextContext):
    """A text context that also carries images (mirrors `max.pipelines.core.TextAndVisionContext`):
    `pixel_values` holds one array per image, in prompt order. maxcli's native models are text-only; the
    class is here for architectures (and their context validators) that take images."""

    pixel_values: tuple[Any, ...] = ()
    image_token_indices: list[int] = field(default_factory=list)

    @property
    def needs_vision_encoding(self) -> bool:
        return bool(self.pixel_values) and self.num_computed_tokens == 0


@dataclass(eq=False)
class EmbeddingsContext:
    request_id: RequestID
    tokens: list[int]
    model_name: str = ""

    @property
    def active_length(self) -> int:
        return len(self.tokens)
