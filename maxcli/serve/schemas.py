"""OpenAI request bodies as pydantic models. extra="forbid": an unknown field is a 400, not silently ignored.

Range checks live here so that the published OpenAPI schema states them and a bad value is rejected
before it reaches the engine; SamplingParams.validate() still guards everything the engine receives.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator

TokenIds = list[int]


def _token_id_key(key: str) -> str:
    if not key.isdigit():
        raise ValueError("must be a token id")
    return key


# A token id as a JSON object key (logit_bias); the schema states the pattern, the validator says it plainly.
TokenIdKey = Annotated[str, AfterValidator(_token_id_key), WithJsonSchema({"type": "string", "pattern": "^[0-9]+$"})]
MAX_N = 16  # choices per request; each is a separate engine request sharing the prompt's cached pages
MAX_STOP_STRINGS = 8


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    """A part of a message's content. Only text parts carry meaning here; the schema says so, and any other
    type is refused with a message that names it."""

    type: Literal["text"]
    text: str


class FunctionCall(_Strict):
    name: str = Field(min_length=1)
    arguments: str = "{}"  # JSON text, as OpenAI sends it


class ToolCallMessage(_Strict):
    """An assistant message's earlier tool call, sent back in the history."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class _Message(_Strict):
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, v: Any) -> Any:
        for part in v if isinstance(v, list) else []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind != "text":
                raise ValueError(f"content parts of type {kind!r} are not supported (text parts only)")
        return v

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)

    def template_message(self) -> dict[str, Any]:
        """The message as chat templates read it (transformers' convention: tool-call arguments as dicts)."""
        out: dict[str, Any] = {"role": self.role, "content": self.text()}  # type: ignore[attr-defined]
        if self.name is not None:
            out["name"] = self.name
        return out


class SystemMessage(_Message):
    role: Literal["system", "developer"]


class UserMessage(_Message):
    role: Literal["user"]


class AssistantMessage(_Message):
    role: Literal["assistant"]
    tool_calls: Optional[list[ToolCallMessage]] = None
    refusal: Optional[str] = None  # echoed back by clients; carries no input

    def template_message(self) -> dict[str, Any]:
        out = super().template_message()
        if self.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function",
                 "function": {"name": c.function.name, "arguments": _arguments_object(c.function.arguments)}}
                for c in self.tool_calls
            ]
        return out


class ToolMessage(_Message):
    role: Literal["tool"]
    tool_call_id: str = Field(min_length=1)  # the assistant tool call this message answers

    def template_message(self) -> dict[str, Any]:
        return {**super().template_message(), "tool_call_id": self.tool_call_id}


# One model per role, told apart by `role`: the published schema states which fields each role carries.
ChatMessage = Annotated[Union[SystemMessage, UserMessage, AssistantMessage, ToolMessage], Field(discriminator="role")]
UNION_TAGS = frozenset({"system", "developer", "user", "assistant", "tool"})  # pydantic puts the tag in error paths


def _arguments_object(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        return arguments  # a template prints it as it was sent


_FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"


def check_json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema`, or a ValueError naming the problem when it is not a valid JSON schema (its own metaschema)."""
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(f"not a valid JSON schema{f' at {where}' if where else ''}: {exc.message}") from None
    return schema


JSONSchema = Annotated[dict[str, Any], AfterValidator(check_json_schema)]


class FunctionDefinition(_Strict):
    name: str = Field(pattern=_FUNCTION_NAME)
    description: Optional[str] = None
    parameters: Optional[JSONSchema] = None  # None means any object
    strict: Optional[bool] = None


class Tool(_Strict):
    type: Literal["function"]
    function: FunctionDefinition


class ToolChoiceFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"]
    function: ToolChoiceFunction


class JSONSchemaFormat(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(min_length=1, max_length=64)
    description: Optional[str] = None
    json_schema: Optional[JSONSchema] = Field(None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None

    @model_validator(mode="after")
    def _needs_schema(self) -> "ResponseFormat":
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs `json_schema`")
        return self


class StructuredOutputs(_Strict):
    """vLLM's `structured_outputs` extra: exactly one constraint."""

    json_: Union[dict[str, Any], str, None] = Field(None, alias="json")
    regex: Optional[str] = None
    choice: Optional[list[str]] = None
    grammar: Optional[str] = None
    json_object: Optional[bool] = None
    disable_any_whitespace: Optional[bool] = None  # accepted; JSON grammars never allow free whitespace (engine.structured.JSON_LAYOUT)
    model_config = ConfigDict(extra="forbid", populate_by_name=True)



class SamplingFields(_Strict):
    """Fields shared by chat and completions: OpenAI's sampling knobs plus vLLM-style extras."""

    model: str = Field(min_length=1)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    temperature: Optional[float] = Field(None, ge=0.0, le=2.0)
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0)
    max_tokens: Optional[int] = Field(None, ge=0)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=-(2**63), le=2**63 - 1)  # choice i uses seed + i
    frequency_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)
    presence_penalty: Optional[float] = Field(None, ge=-2.0, le=2.0)
    user: Optional[str] = None
    logit_bias: Optional[dict[TokenIdKey, Annotated[float, Field(ge=-100.0, le=100.0)]]] = None
    response_format: Optional[ResponseFormat] = None
    # accepted and ignored: they do not change the output
    metadata: Optional[dict[str, Any]] = None
    store: Optional[bool] = None
    service_tier: Optional[str] = None
    prompt_cache_key: Optional[str] = None
    safety_identifier: Optional[str] = None
    # extras (vLLM names)
    structured_outputs: Optional[StructuredOutputs] = None
    guided_json: Union[dict[str, Any], str, None] = None
    guided_regex: Optional[str] = None
    guided_choice: Optional[list[str]] = None
    guided_grammar: Optional[str] = None
    top_k: Optional[int] = Field(None, ge=-1)
    min_p: Optional[float] = Field(None, ge=0.0, le=1.0)
    repetition_penalty: Optional[float] = Field(None, gt=0.0, le=10.0)
    min_tokens: Optional[int] = Field(None, ge=0)
    ignore_eos: Optional[bool] = None
    stop_token_ids: Optional[list[int]] = Field(None, max_length=64)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: Union[str, list[str], None]) -> Optional[list[str]]:
        if v is None:
            return None
        stops = [v] if isinstance(v, str) else list(v)
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    @field_validator("stop_token_ids")
    @classmethod
    def _check_stop_ids(cls, v: Optional[list[int]]) -> Optional[list[int]]:
        if v is not None and any(t < 0 for t in v):
            raise ValueError("stop_token_ids must be non-negative token ids")
        return v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    tools: Optional[list[Tool]] = Field(None, max_length=128)
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    # accepted and ignored: they do not change the output
    reasoning_effort: Optional[str] = None
    verbosity: Optional[str] = None
    modalities: Optional[list[Literal["text"]]] = None
    prediction: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _tool_choice_needs_tools(self) -> "ChatCompletionRequest":
        if self.tool_choice not in (None, "none") and not self.tools:
            raise ValueError("tool_choice needs `tools`")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = [t.function.name for t in self.tools or []]
            if self.tool_choice.function.name not in names:
                raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not among the tools "
                                 f"({', '.join(names)})")
        return self

    @property
    def max_new_tokens(self) -> Optional[int]:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def num_logprobs(self) -> Optional[int]:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs=true")
        return (self.top_logprobs or 0) if self.logprobs else None

    def chat_messages(self) -> list[dict[str, Any]]:
        return [m.template_message() for m in self.messages]


PromptInput = Union[str, list[str], TokenIds, list[TokenIds]]


class CompletionRequest(SamplingFields):
    prompt: PromptInput
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=20)
    suffix: Optional[str] = None
    best_of: Optional[int] = Field(None, ge=1, le=1)  # only 1 (= n) is supported

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, v: PromptInput) -> PromptInput:
        if isinstance(v, list):
            if not v:
                raise ValueError("prompt must not be an empty list")
            if isinstance(v[0], list) and any(not ids for ids in v):
                raise ValueError("token-id prompts must not be empty")
        return v

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, v: Optional[str]) -> Optional[str]:
        if v:
            raise ValueError("suffix is not supported")
        return v

    def prompts(self) -> list[Union[str, TokenIds]]:
        """Each prompt of the batch: a string or a token-id list."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]


class EmbeddingRequest(_Strict):
    model: str = Field(min_length=1)
    input: PromptInput
    encoding_format: Literal["float", "base64"] = "float"
    user: Optional[str] = None

    @field_validator("input")
    @classmethod
    def _check_input(cls, v: PromptInput) -> PromptInput:
        if isinstance(v, list) and not v:
            raise ValueError("input must not be an empty list")
        return v

    def inputs(self) -> list[Union[str, TokenIds]]:
        v = self.input
        if isinstance(v, str):
            return [v]
        if v and isinstance(v[0], int):
            return [list(v)]  # type: ignore[arg-type]
        return list(v)  # type: ignore[arg-type]
