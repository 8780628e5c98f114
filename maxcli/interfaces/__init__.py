"""Contracts shared by tokenizers, pipelines, the engine and the server (mirrors `max.interfaces`)."""

from __future__ import annotations

import enum
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable


class PipelineTask(str, enum.Enum):
    TEXT_GENERATION = "text_generation"
    EMBEDDINGS_GENERATION = "embeddings_generation"

    def __str__(self) -> str:
        return self.value


class RequestID(str):
    """A request identifier: a string, random (uuid4 hex) when none is given."""

    def __new__(cls, value: str | None = None) -> "RequestID":
        return super().__new__(cls, value if value is not None else uuid.uuid4().hex)


class InputError(ValueError):
    """A request the model cannot serve as given (too long, bad sampling values, ...)."""


class GenerationStatus(str, enum.Enum):
    ACTIVE = "active"
    END_OF_SEQUENCE = "end_of_sequence"  # eos token or stop string/token
    MAXIMUM_LENGTH = "maximum_length"  # max_new_tokens or the context limit
    CANCELLED = "cancelled"

    @property
    def is_done(self) -> bool:
        return self is not GenerationStatus.ACTIVE

    @property
    def finish_reason(self) -> str | None:
        return {
            GenerationStatus.ACTIVE: None,
            GenerationStatus.END_OF_SEQUENCE: "stop",
            GenerationStatus.MAXIMUM_LENGTH: "length",
            GenerationStatus.CANCELLED: "abort",
        }[self]


@dataclass
class SamplingParams:
    """Per-request sampling settings. `validate()` raises InputError on values no sampler accepts."""

    max_new_tokens: int | None = None
    temperature: float = 1.0
    top_k: int = -1  # -1 or 0: off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    min_new_tokens: int = 0
    ignore_eos: bool = False
    logprobs: int | None = None  # number of top alternatives returned with each sampled token
    echo: bool = False  # return the prompt's tokens (with their logprobs when logprobs is set)
    skip_special_tokens: bool = True
    # Structured output: at most one of these constrains the tokens (maxcli.engine.structured).
    json_schema: dict[str, Any] | str | None = None  # a JSON schema (dict or its JSON text)
    json_object: bool = False  # any JSON object
    regex: str | None = None
    choice: list[str] | None = None  # exactly one of these strings
    grammar: str | None = None  # a Lark grammar (llguidance's dialect) or a GBNF grammar
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit, in [-100, 100]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1

    @property
    def structured_kinds(self) -> list[str]:
        """The structured-output fields that are set (valid requests have at most one)."""
        kinds = [("json_schema", self.json_schema is not None), ("json_object", self.json_object),
                 ("regex", self.regex is not None), ("choice", self.choice is not None),
                 ("grammar", self.grammar is not None)]
        return [name for name, on in kinds if on]

    @property
    def is_constrained(self) -> bool:
        return bool(self.structured_kinds)

    def validate(self) -> "SamplingParams":
        def bad(msg: str) -> None:
            raise InputError(msg)

        if self.max_new_tokens is not None and self.max_new_tokens < 0:
            bad(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            bad(f"temperature must be >= 0, got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            bad(f"top_p must be in (0, 1], got {self.top_p}")
        if not (0.0 <= self.min_p <= 1.0):
            bad(f"min_p must be in [0, 1], got {self.min_p}")
        if self.top_k < -1:
            bad(f"top_k must be -1 (off) or >= 0, got {self.top_k}")
        if self.repetition_penalty <= 0:
            bad(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not (-2.0 <= self.frequency_penalty <= 2.0):
            bad(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}")
        if not (-2.0 <= self.presence_penalty <= 2.0):
            bad(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}")
        if self.min_new_tokens < 0:
            bad(f"min_tokens must be >= 0, got {self.min_new_tokens}")
        if self.logprobs is not None and not (0 <= self.logprobs <= 20):
            bad(f"logprobs must be in [0, 20], got {self.logprobs}")
        kinds = self.structured_kinds
        if len(kinds) > 1:
            bad(f"at most one structured-output constraint per request, got {' and '.join(kinds)}")
        if self.choice is not None and (not self.choice or not all(isinstance(c, str) and c for c in self.choice)):
            bad("choice must be a non-empty list of non-empty strings")
        for token, bias in (self.logit_bias or {}).items():
            if isinstance(token, bool) or not isinstance(token, int) or token < 0:
                bad(f"logit_bias keys must be token ids, got {token!r}")
            if not -100.0 <= bias <= 100.0:
                bad(f"logit_bias values must be in [-100, 100], got {bias} for token {token}")
        return self


@dataclass
class TextGenerationRequest:
    """What a client asks for: a prompt (text or token ids) or chat messages, plus sampling settings."""

    request_id: RequestID
    model_name: str = ""
    prompt: str | list[int] | None = None
    messages: list[dict[str, Any]] | None = None
    sampling_params: SamplingParams = field(default_factory=SamplingParams)
    apply_chat_template: bool = True  # only for `messages`; a raw `prompt` is never templated
    tools: list[dict[str, Any]] | None = None  # OpenAI function tools, given to the chat template
    lora: str | None = None  # a served LoRA adapter's name (None: the base model)


@dataclass
class EmbeddingsGenerationRequest:
    request_id: RequestID
    model_name: str = ""
    prompt: str | list[int] = ""
    truncate: bool = False


ContextT = TypeVar("ContextT")
RequestT = TypeVar("RequestT")
EncodedT = TypeVar("EncodedT")


class PipelineInputs:
    """Base of a pipeline's inputs (TextGenerationInputs, EmbeddingsGenerationInputs)."""


@runtime_checkable
class PipelineOutput(Protocol):
    """What a pipeline returns per request: at least whether the request is done."""

    @property
    def is_done(self) -> bool: ...


@dataclass
class LogProbabilities:
    """Log probability of each sampled token and its top alternatives (token id -> logprob)."""

    token_log_probabilities: list[float] = field(default_factory=list)
    top_log_probabilities: list[dict[int, float]] = field(default_factory=list)


@dataclass
class TextGenerationOutput:
    request_id: RequestID
    tokens: list[int]
    final_status: GenerationStatus
    log_probabilities: LogProbabilities | None = None

    @property
    def is_done(self) -> bool:
        return self.final_status.is_done


@dataclass
class TextGenerationInputs(PipelineInputs, Generic[ContextT]):
    """One engine step: batches of contexts keyed by request id, and how many decode steps to run."""

    batches: list[dict[RequestID, ContextT]]
    num_steps: int = 1

    @property
    def batch(self) -> dict[RequestID, ContextT]:
        merged: dict[RequestID, ContextT] = {}
        for b in self.batches:
            merged.update(b)
        return merged


@dataclass
class EmbeddingsGenerationInputs(PipelineInputs, Generic[ContextT]):
    batches: list[dict[RequestID, ContextT]]

    @property
    def batch(self) -> dict[RequestID, ContextT]:
        merged: dict[RequestID, ContextT] = {}
        for b in self.batches:
            merged.update(b)
        return merged


@dataclass
class EmbeddingsGenerationOutput:
    request_id: RequestID
    embeddings: Any  # numpy float32 vector
    num_tokens: int = 0

    @property
    def is_done(self) -> bool:
        return True


class Pipeline(ABC, Generic[RequestT, ContextT]):
    """A stateless orchestrator: all per-request state lives in the contexts passed to execute()."""

    @abstractmethod
    def execute(self, inputs: Any) -> dict[RequestID, Any]: ...

    @abstractmethod
    def release(self, request_id: RequestID) -> None: ...


class PipelineTokenizer(ABC, Generic[ContextT, EncodedT, RequestT]):
    """Turns requests into contexts and token ids back into text."""

    @property
    @abstractmethod
    def eos(self) -> int: ...

    @abstractmethod
    async def new_context(self, request: RequestT) -> ContextT: ...

    @abstractmethod
    async def encode(self, prompt: str, add_special_tokens: bool = True) -> Any: ...

    @abstractmethod
    async def decode(self, encoded: Any, **kwargs: Any) -> str: ...


__all__ = [
    "ContextT",
    "EmbeddingsGenerationInputs",
    "EmbeddingsGenerationOutput",
    "EmbeddingsGenerationRequest",
    "GenerationStatus",
    "InputError",
    "LogProbabilities",
    "Pipeline",
    "PipelineInputs",
    "PipelineOutput",
    "PipelineTask",
    "PipelineTokenizer",
    "RequestID",
    "SamplingParams",
    "TextGenerationInputs",
    "TextGenerationOutput",
    "TextGenerationRequest",
]
